package main

// What the benchmark modes measure besides their counts: latency
// percentiles and the machine's CPU time over their timed loop.

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/prometheus/procfs"

	"github.com/slimnet/slim/internal/bench/wire"
)

// timed runs loop between two reads of the machine's CPU times, which the
// benchmark diffs: read here, the window is exactly the loop. It returns
// the loop's duration and the CPU times before and after it.
func timed(loop func(start time.Time) error) (time.Duration, wire.CPUTimes, wire.CPUTimes, error) {
	c0, err := cpuTimes()
	if err != nil {
		return 0, c0, c0, err
	}
	start := time.Now()
	err = loop(start)
	el := time.Since(start)
	if err != nil {
		return el, c0, c0, err
	}
	c1, err := cpuTimes()
	return el, c0, c1, err
}

// cpuTimes reads the machine's CPU times from /proc/stat.
func cpuTimes() (wire.CPUTimes, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return wire.CPUTimes{}, fmt.Errorf("cpu times: %w", err)
	}
	c, err := wire.ReadCPUTimes(fs)
	if err != nil {
		return c, fmt.Errorf("cpu times: %w", err)
	}
	return c, nil
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
