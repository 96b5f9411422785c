package main

// What the benchmark modes measure besides their counts: latency
// percentiles and the machine's CPU time over their timed loop.

import (
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/slimnet/slim/internal/bench/wire"
)

// cpuStatLine returns the first line of /proc/stat (the machine's total
// CPU times), which the benchmark diffs; it is read here so that the
// window is exactly the timed loop.
func cpuStatLine() string {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}

// summarize sorts d and returns its nearest-rank percentiles.
func summarize(d []time.Duration) wire.Latencies {
	if len(d) == 0 {
		return wire.Latencies{}
	}
	slices.Sort(d)
	us := func(x time.Duration) float64 { return float64(x) / float64(time.Microsecond) }
	pct := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(d)))) - 1
		return us(d[min(max(i, 0), len(d)-1)])
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return wire.Latencies{P50: pct(0.50), P90: pct(0.90), P99: pct(0.99),
		Mean: us(sum) / float64(len(d)), Min: us(d[0]), Max: us(d[len(d)-1])}
}
