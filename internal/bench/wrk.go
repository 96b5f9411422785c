package bench

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/slimnet/slim/internal/bench/wire"
)

// WrkResult is what the benchmark takes from `wrk --latency`'s report.
type WrkResult struct {
	// Requests completed, and the rate wrk computed (Requests/sec).
	Requests int
	RPS      float64
	// Latency: mean and max from the thread stats, p50/p90/p99 from the
	// latency distribution, in microseconds.
	Latency wire.Latencies
	// Socket errors (connect, read, write, timeout) and responses that
	// were not 2xx or 3xx.
	ConnectErrors, ReadErrors, WriteErrors, Timeouts, Non2xx int
}

// Errors is the number of failed requests and connections.
func (w WrkResult) Errors() int {
	return w.ConnectErrors + w.ReadErrors + w.WriteErrors + w.Timeouts + w.Non2xx
}

// ErrWrk is a run that wrk reports as failed.
var ErrWrk = errors.New("wrk")

// ParseWrk reads wrk's report, as wrk 4 prints it with --latency:
//
//	Running 2s test @ http://127.0.0.1:8080/
//	  2 threads and 32 connections
//	  Thread Stats   Avg      Stdev     Max   +/- Stdev
//	    Latency     1.39ms    1.37ms  30.60ms   92.68%
//	    Req/Sec    12.55k     2.14k   16.70k    62.50%
//	  Latency Distribution
//	     50%    1.11ms
//	     ...
//	     99%    5.25ms
//	  50053 requests in 2.01s, 40.57MB read
//	  Socket errors: connect 0, read 61, write 0, timeout 0
//	  Non-2xx or 3xx responses: 56887
//	Requests/sec:  24856.22
//
// A run without a single completed request, or whose output has no
// Requests/sec line (wrk could not connect), is an error wrapping ErrWrk.
func ParseWrk(out []byte) (WrkResult, error) {
	var r WrkResult
	var haveRate, haveRequests bool
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		var err error
		switch {
		case f[0] == "Latency" && len(f) >= 4:
			if r.Latency.Mean, err = parseWrkDuration(f[1]); err == nil {
				r.Latency.Max, err = parseWrkDuration(f[3])
			}
		case len(f) == 2 && strings.HasSuffix(f[0], "%"):
			var us float64
			if us, err = parseWrkDuration(f[1]); err == nil {
				switch f[0] {
				case "50%":
					r.Latency.P50 = us
				case "90%":
					r.Latency.P90 = us
				case "99%":
					r.Latency.P99 = us
				}
			}
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.Requests, err = strconv.Atoi(f[0])
			haveRequests = true
		case strings.HasPrefix(line, "Socket errors:"):
			err = parseWrkSocketErrors(strings.TrimPrefix(line, "Socket errors:"), &r)
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			r.Non2xx, err = strconv.Atoi(f[len(f)-1])
		case f[0] == "Requests/sec:" && len(f) == 2:
			r.RPS, err = strconv.ParseFloat(f[1], 64)
			haveRate = true
		}
		if err != nil {
			return WrkResult{}, fmt.Errorf("parse wrk output: %q: %w", line, err)
		}
	}
	if !haveRate || !haveRequests {
		return WrkResult{}, fmt.Errorf("%w: no report in its output: %q", ErrWrk, trim(strings.TrimSpace(string(out)), 120))
	}
	if r.Requests == 0 {
		return r, fmt.Errorf("%w: no request completed (socket errors: connect %d, read %d, write %d, timeout %d)",
			ErrWrk, r.ConnectErrors, r.ReadErrors, r.WriteErrors, r.Timeouts)
	}
	return r, nil
}

// parseWrkSocketErrors reads "connect 0, read 61, write 0, timeout 0".
func parseWrkSocketErrors(s string, r *WrkResult) error {
	for part := range strings.SplitSeq(s, ",") {
		f := strings.Fields(part)
		if len(f) != 2 {
			return fmt.Errorf("socket errors %q", part)
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			return err
		}
		switch f[0] {
		case "connect":
			r.ConnectErrors = n
		case "read":
			r.ReadErrors = n
		case "write":
			r.WriteErrors = n
		case "timeout":
			r.Timeouts = n
		}
	}
	return nil
}

// parseWrkDuration reads a duration as wrk prints it ("558.00us",
// "1.11ms", "1.02s", "2.00m", "1.00h") in microseconds.
func parseWrkDuration(s string) (float64, error) {
	units := []struct {
		suffix string
		us     float64
	}{{"us", 1}, {"ms", 1e3}, {"s", 1e6}, {"m", 60e6}, {"h", 3600e6}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("duration %q: %w", s, err)
			}
			return f * u.us, nil
		}
	}
	return 0, fmt.Errorf("duration %q: no unit", s)
}
