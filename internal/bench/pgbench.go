package bench

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// PgbenchResult is what the benchmark takes from pgbench's report.
type PgbenchResult struct {
	Clients int
	// Transactions processed and failed.
	Transactions, Failed int
	// TPS is the rate without the initial connection time where pgbench
	// reports it that way (pgbench 14 and later, and "excluding
	// connections establishing" before), else the rate it reports (-C:
	// including the reconnections).
	TPS float64
	// LatencyAvg is the mean transaction latency, in microseconds.
	LatencyAvg float64
	// ConnectMs is the initial connection time (or, with -C, the average
	// connection time), in milliseconds.
	ConnectMs float64
}

// ErrPgbench is a pgbench run without a report.
var ErrPgbench = errors.New("pgbench")

// ParsePgbench reads pgbench's report (stdout), as pgbench 15 prints it:
//
//	number of clients: 4
//	number of transactions actually processed: 53182
//	number of failed transactions: 0 (0.000%)
//	latency average = 0.147 ms
//	initial connection time = 54.547 ms
//	tps = 27237.997780 (without initial connection time)
//
// Output without transactions or a tps line is an error wrapping
// ErrPgbench.
func ParsePgbench(out []byte) (PgbenchResult, error) {
	var r PgbenchResult
	var haveTPS, haveTxns bool
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.Contains(k, "=") {
			k, v, ok = strings.Cut(line, "=")
		}
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		first, rest, _ := strings.Cut(v, " ")
		var err error
		switch k {
		case "number of clients":
			r.Clients, err = strconv.Atoi(first)
		case "number of transactions actually processed":
			// "53182", or "53182/60000" with -t.
			n, _, _ := strings.Cut(first, "/")
			r.Transactions, err = strconv.Atoi(n)
			haveTxns = true
		case "number of failed transactions":
			r.Failed, err = strconv.Atoi(first)
		case "latency average":
			r.LatencyAvg, err = parseMs(first, rest)
			r.LatencyAvg *= 1000
		case "initial connection time", "average connection time":
			r.ConnectMs, err = parseMs(first, rest)
		case "tps":
			var tps float64
			if tps, err = strconv.ParseFloat(first, 64); err == nil {
				// pgbench 13 and before print two tps lines; the one
				// excluding the connections is the steady state.
				if !haveTPS || strings.Contains(rest, "excluding") {
					r.TPS = tps
				}
				haveTPS = true
			}
		}
		if err != nil {
			return PgbenchResult{}, fmt.Errorf("parse pgbench output: %q: %w", line, err)
		}
	}
	if !haveTPS || !haveTxns {
		return PgbenchResult{}, fmt.Errorf("%w: no report in its output: %q", ErrPgbench, trim(strings.TrimSpace(string(out)), 120))
	}
	if r.Transactions == 0 {
		return r, fmt.Errorf("%w: no transaction processed (%d failed)", ErrPgbench, r.Failed)
	}
	return r, nil
}

// parseMs reads "0.147" with unit "ms".
func parseMs(v, unit string) (float64, error) {
	if u := strings.TrimSpace(unit); u != "ms" {
		return 0, fmt.Errorf("unit %q, want ms", u)
	}
	return strconv.ParseFloat(v, 64)
}
