package bench

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// RedisTest is one test of redis-benchmark's report: a command's rate and
// latencies (in microseconds; redis-benchmark prints milliseconds).
type RedisTest struct {
	RPS                               float64
	AvgUs, MinUs, P50Us, P95Us, P99Us float64
	MaxUs                             float64
	// HasPercentiles: the report had p50 and p99 columns (redis 7).
	HasPercentiles bool
}

// ErrRedisBenchmark is output of redis-benchmark without a report.
var ErrRedisBenchmark = errors.New("redis-benchmark")

// ParseRedisBenchmark reads redis-benchmark's --csv report (redis 7):
//
//	"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
//	"SET","44583.15","0.606","0.152","0.519","1.127","2.071","5.527"
//
// and returns the tests by name (SET, GET, ...). Only "test" and "rps"
// are required; older versions print no header, just test and rps.
func ParseRedisBenchmark(out []byte) (map[string]RedisTest, error) {
	rd := csv.NewReader(strings.NewReader(string(out)))
	rd.FieldsPerRecord = -1
	header := []string{"test", "rps"}
	tests := map[string]RedisTest{}
	for first := true; ; first = false {
		rec, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse redis-benchmark output: %w", err)
		}
		if first && len(rec) > 0 && rec[0] == "test" {
			header = rec
			continue
		}
		if len(rec) < 2 {
			return nil, fmt.Errorf("parse redis-benchmark output: line %q", strings.Join(rec, ","))
		}
		var t RedisTest
		name := ""
		for i, col := range header {
			if i >= len(rec) {
				break
			}
			if col == "test" {
				name = rec[i]
				continue
			}
			v, err := strconv.ParseFloat(rec[i], 64)
			if err != nil {
				return nil, fmt.Errorf("parse redis-benchmark output: %s %s: %w", rec[0], col, err)
			}
			us := v * 1000
			switch col {
			case "rps":
				t.RPS = v
			case "avg_latency_ms":
				t.AvgUs = us
			case "min_latency_ms":
				t.MinUs = us
			case "p50_latency_ms":
				t.P50Us = us
			case "p95_latency_ms":
				t.P95Us = us
			case "p99_latency_ms":
				t.P99Us = us
			case "max_latency_ms":
				t.MaxUs = us
			}
		}
		t.HasPercentiles = slices.Contains(header, "p50_latency_ms") && slices.Contains(header, "p99_latency_ms")
		if name == "" {
			return nil, fmt.Errorf("parse redis-benchmark output: a line without a test name")
		}
		tests[name] = t
	}
	if len(tests) == 0 || !slices.Contains(header, "rps") {
		return nil, fmt.Errorf("%w: no report in its output: %q", ErrRedisBenchmark, trim(strings.TrimSpace(string(out)), 120))
	}
	return tests, nil
}
