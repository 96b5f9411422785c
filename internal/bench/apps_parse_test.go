package bench

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/slimnet/slim/internal/bench/wire"
)

// The outputs in testdata were captured from the Debian tools (wrk 4.1.0,
// pgbench 15.18, redis-benchmark 7.0.15) and from slimprobe memcached
// against memcached 1.6.18, over loopback.

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parseCase is a captured output in testdata and what its parser makes
// of it: want, or an error that is wantErr.
type parseCase[T any] struct {
	file    string
	want    T
	wantErr error
}

// testParse runs parse on every case; equal compares results.
func testParse[T any](t *testing.T, cases []parseCase[T], parse func([]byte) (T, error), equal func(a, b T) bool) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			got, err := parse(readTestdata(t, tc.file))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !equal(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func near(x, y float64) bool { return x-y < 1e-6 && y-x < 1e-6 }

func TestParseWrk(t *testing.T) {
	testParse(t, []parseCase[WrkResult]{
		{file: "wrk-keepalive.txt", want: WrkResult{Requests: 50053, RPS: 24856.22,
			Latency: wire.Latencies{P50: 1110, P90: 2460, P99: 5250, Mean: 1390, Max: 30600}}},
		{file: "wrk-close.txt", want: WrkResult{Requests: 24672, RPS: 12125.33,
			Latency: wire.Latencies{P50: 2080, P90: 3560, P99: 14670, Mean: 2470, Max: 27380}}},
		// 404s: counted, for the caller to judge.
		{file: "wrk-non2xx.txt", want: WrkResult{Requests: 56887, RPS: 51703.70, Non2xx: 56887,
			Latency: wire.Latencies{P50: 558, P90: 880, P99: 2680, Mean: 614.68, Max: 5270}}},
		{file: "wrk-socket-errors.txt", wantErr: ErrWrk},
		{file: "wrk-refused.txt", wantErr: ErrWrk},
	}, ParseWrk, approxWrk)
	r, err := ParseWrk(readTestdata(t, "wrk-socket-errors.txt"))
	if err == nil || r.ReadErrors != 61 || r.Errors() != 61 {
		t.Errorf("socket errors: %+v, %v", r, err)
	}
}

func approxWrk(a, b WrkResult) bool {
	return a.Requests == b.Requests && near(a.RPS, b.RPS) && a.Errors() == b.Errors() && a.Non2xx == b.Non2xx &&
		near(a.Latency.P50, b.Latency.P50) && near(a.Latency.P90, b.Latency.P90) && near(a.Latency.P99, b.Latency.P99) &&
		near(a.Latency.Mean, b.Latency.Mean) && near(a.Latency.Max, b.Latency.Max)
}

func TestParseWrkDuration(t *testing.T) {
	for in, want := range map[string]float64{"558.00us": 558, "1.11ms": 1110, "1.02s": 1.02e6, "2.00m": 120e6, "0.50h": 1800e6} {
		if got, err := parseWrkDuration(in); err != nil || got < want-1e-6 || got > want+1e-6 {
			t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "12", "ms", "1.2x"} {
		if _, err := parseWrkDuration(in); err == nil {
			t.Errorf("parseWrkDuration(%q): want an error", in)
		}
	}
}

func TestParsePgbench(t *testing.T) {
	testParse(t, []parseCase[PgbenchResult]{
		{file: "pgbench-select.txt", want: PgbenchResult{Clients: 4, Transactions: 53182, TPS: 27237.997780, LatencyAvg: 147, ConnectMs: 54.547}},
		// -C: a connection per transaction; the rate includes them.
		{file: "pgbench-connect.txt", want: PgbenchResult{Clients: 4, Transactions: 78, TPS: 38.391287, LatencyAvg: 104190, ConnectMs: 51.214}},
		{file: "pgbench-refused.txt", wantErr: ErrPgbench},
	}, ParsePgbench, func(a, b PgbenchResult) bool {
		return a.Clients == b.Clients && a.Transactions == b.Transactions && a.Failed == b.Failed &&
			near(a.TPS, b.TPS) && near(a.LatencyAvg, b.LatencyAvg) && near(a.ConnectMs, b.ConnectMs)
	})
	// pgbench 13 and before: two tps lines, the second excluding the
	// connections; and the failure modes of a report.
	old := "number of transactions actually processed: 100\nlatency average = 0.5 ms\n" +
		"tps = 90.0 (including connections establishing)\ntps = 100.0 (excluding connections establishing)\n"
	if r, err := ParsePgbench([]byte(old)); err != nil || r.TPS != 100 {
		t.Errorf("old format: %+v, %v", r, err)
	}
	for name, in := range map[string]string{
		"no transactions": "number of transactions actually processed: 0\ntps = 0.0 (without initial connection time)\n",
		"latency in s":    "number of transactions actually processed: 1\nlatency average = 0.5 s\ntps = 1\n",
		"no tps":          "number of transactions actually processed: 10\n",
	} {
		if _, err := ParsePgbench([]byte(in)); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestParseRedisBenchmark(t *testing.T) {
	got, err := ParseRedisBenchmark(readTestdata(t, "redis-benchmark.csv"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                  string
		rps, avg, p50, p99, m float64
	}{
		{"SET", 44583.15, 606, 519, 2071, 5527},
		{"GET", 46189.38, 571, 519, 1623, 6079},
	} {
		r, ok := got[tc.name]
		if !ok || !near(r.RPS, tc.rps) || !near(r.AvgUs, tc.avg) || !near(r.P50Us, tc.p50) || !near(r.P99Us, tc.p99) ||
			!near(r.MaxUs, tc.m) || !r.HasPercentiles {
			t.Errorf("%s: got %+v (present %v)", tc.name, r, ok)
		}
	}
	if len(got) != 2 {
		t.Errorf("%d tests, want 2", len(got))
	}
	// Before redis 6.2: no header, no latencies.
	old, err := ParseRedisBenchmark([]byte("\"SET\",\"85034.02\"\n\"GET\",\"86206.90\"\n"))
	if err != nil || old["GET"].RPS != 86206.90 || old["GET"].HasPercentiles {
		t.Errorf("old format: %+v, %v", old, err)
	}
	for name, in := range map[string]string{
		"empty":       "",
		"header only": `"test","rps"` + "\n",
		"refused":     "Could not connect to Redis at 10.0.0.1:6379: Connection refused\n",
		"bad rate":    `"test","rps"` + "\n" + `"SET","fast"` + "\n",
	} {
		if _, err := ParseRedisBenchmark([]byte(in)); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestParseMemcached(t *testing.T) {
	r, err := ParseMemcached(readTestdata(t, "memcached.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 58278 || r.Sets != 5301 || r.Hits != 52977 || r.Conns != 4 || r.P50 != 82.156 || r.P99 != 885.828 || r.OpsPerSec < 29133 {
		t.Errorf("got %+v", r)
	}
	cpu, err := probeCPU(r.CPUStart, r.CPUEnd)
	if err != nil {
		t.Fatal(err)
	}
	// 59 user + 164 system + 109 softirq ticks
	if cpu.Milliseconds() != 3320 {
		t.Errorf("cpu %v", cpu)
	}
	// memcached killed during the run: the connections fail.
	if r, err := ParseMemcached(readTestdata(t, "memcached-failed.json")); err == nil || r.Errors != 2 {
		t.Errorf("failed run: %+v, %v", r, err)
	}
	for name, in := range map[string]string{
		"empty":  "",
		"rr":     rrOutput,
		"no ops": `{"mode":"memcached","ops":0,"seconds":1}`,
	} {
		if _, err := ParseMemcached([]byte(in)); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func FuzzParseWrk(f *testing.F) {
	for _, n := range []string{"wrk-keepalive.txt", "wrk-socket-errors.txt"} {
		b, _ := os.ReadFile(filepath.Join("testdata", n))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { ParseWrk(b) })
}

func FuzzParsePgbench(f *testing.F) {
	b, _ := os.ReadFile(filepath.Join("testdata", "pgbench-select.txt"))
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) { ParsePgbench(b) })
}

func FuzzParseRedisBenchmark(f *testing.F) {
	b, _ := os.ReadFile(filepath.Join("testdata", "redis-benchmark.csv"))
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) { ParseRedisBenchmark(b) })
}
