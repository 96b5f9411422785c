package bench

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/slimnet/slim/internal/lab"
)

// Defaults for Config fields left zero.
const (
	DefaultRuns       = 5
	QuickRuns         = 3
	DefaultRRSize     = 1 // as netperf's TCP_RR
	DefaultCRRWorkers = 4 // two per core: the broker's work overlaps
	// Full run: 15 mode-runs of the core tests (~32 s each, crr1 taking
	// crr's duration) and of the applications (~16 s): about 12 minutes
	// on 2 cores.
	DefaultTCPTime = 8 * time.Second
	DefaultRRTime  = 5 * time.Second
	DefaultCRRTime = 5 * time.Second
	DefaultAppTime = 3 * time.Second
	// --quick: 9 mode-runs of ~8 s and of ~5.5 s, a little over 2
	// minutes with the lab's and the servers' setup (measured before crr1
	// was added: 1m56s).
	QuickTCPTime = 2 * time.Second
	QuickRRTime  = time.Second
	QuickCRRTime = time.Second
	QuickAppTime = time.Second
)

// Config says what Run measures, and on which lab.
type Config struct {
	// Lab addresses the lab: StateDir, BinDir and Launcher. Run sets
	// Hosts (2) and Progress itself.
	Lab lab.Config
	// Reuse benchmarks the lab that runs at Lab.StateDir instead of
	// building one, and leaves it up. Without it, Run refuses to start
	// when any lab exists (it would tear it down at the end).
	Reuse bool
	// Keep leaves the lab Run built up at the end. The benchmark's own
	// containers and servers are removed either way.
	Keep bool
	// Probe is the slimprobe binary (static, CGO_ENABLED=0).
	Probe string
	// Runs is the number of runs (DefaultRuns; QuickRuns with Quick).
	Runs int
	// Quick shortens the defaults: QuickRuns and Quick*Time.
	Quick bool
	// TCPTime is each iperf3 test's duration (whole seconds, at least 1).
	TCPTime time.Duration
	// RRTime and CRRTime are the rr and crr tests' durations (crr1
	// takes crr's).
	RRTime, CRRTime time.Duration
	// RRSize is rr's message size in bytes.
	RRSize int
	// CRRWorkers is the number of crr clients at once.
	CRRWorkers int
	// Tests are the tests to run (see Tests); they run in Tests' order.
	// Nil runs all, or CoreTests with NoApps.
	Tests []string
	// NoApps leaves out the application tests (AppTests) when Tests is
	// nil.
	NoApps bool
	// AppTime is each application test's duration (whole seconds, at
	// least 1: wrk and pgbench take seconds).
	AppTime time.Duration
	// Policies, if not zero, has crr1 also measured with this many
	// network policies in force in the overlay and slim modes (see
	// policies.go).
	Policies int
	// Service has crr1 also measured through a service fronting its
	// server, in the overlay and slim modes (see services.go).
	Service bool
	// Progress receives one line per step with the elapsed time; nil is
	// silent.
	Progress io.Writer
}

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	pick := func(d *time.Duration, full, quick time.Duration) {
		if *d == 0 {
			*d = full
			if c.Quick {
				*d = quick
			}
		}
	}
	if c.Runs == 0 {
		c.Runs = DefaultRuns
		if c.Quick {
			c.Runs = QuickRuns
		}
	}
	pick(&c.TCPTime, DefaultTCPTime, QuickTCPTime)
	pick(&c.RRTime, DefaultRRTime, QuickRRTime)
	pick(&c.CRRTime, DefaultCRRTime, QuickCRRTime)
	pick(&c.AppTime, DefaultAppTime, QuickAppTime)
	if c.RRSize == 0 {
		c.RRSize = DefaultRRSize
	}
	if c.CRRWorkers == 0 {
		c.CRRWorkers = DefaultCRRWorkers
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Runs < 1 || c.Runs > maxRuns:
		return fmt.Errorf("runs %d: want 1 to %d", c.Runs, maxRuns)
	case c.TCPTime < 0 || c.RRTime <= 0 || c.CRRTime <= 0 || c.AppTime < 0:
		return errors.New("test durations must be positive")
	case c.RRSize < 1 || c.RRSize > 1<<20:
		return fmt.Errorf("rr size %d: want 1 to %d bytes", c.RRSize, 1<<20)
	case c.CRRWorkers < 1 || c.CRRWorkers > 256:
		return fmt.Errorf("crr workers %d: want 1 to 256", c.CRRWorkers)
	case c.Policies < 0 || c.Policies > MaxPolicies:
		return fmt.Errorf("policies %d: want 0 to %d", c.Policies, MaxPolicies)
	case c.Probe == "":
		return errors.New("no slimprobe binary")
	case c.Tests != nil && len(c.Tests) == 0:
		return errors.New("no tests")
	}
	seen := map[string]bool{}
	for _, t := range c.Tests {
		if !slices.Contains(Tests, t) {
			return fmt.Errorf("unknown test %q: want some of %s", t, strings.Join(Tests, ", "))
		}
		if seen[t] {
			return fmt.Errorf("test %q given twice", t)
		}
		seen[t] = true
	}
	return nil
}

// tests are the tests to run, in run order.
func (c Config) tests() []string {
	switch {
	case c.Tests != nil:
		var ts []string
		for _, t := range Tests {
			if slices.Contains(c.Tests, t) {
				ts = append(ts, t)
			}
		}
		return ts
	case c.NoApps:
		return slices.Clone(CoreTests)
	}
	return slices.Clone(Tests)
}

// tcpSeconds is iperf3's -t: whole seconds, rounded up, at least 1.
func (c Config) tcpSeconds() int { return max(1, int(math.Ceil(c.TCPTime.Seconds()))) }

// appSeconds is the application tests' duration: whole seconds, rounded
// up, at least 1.
func (c Config) appSeconds() int { return max(1, int(math.Ceil(c.AppTime.Seconds()))) }

// Settings is what the report records of c (with defaults applied).
func (c Config) settings() Settings {
	s := Settings{Runs: c.Runs, Quick: c.Quick, TCPSeconds: c.tcpSeconds(), RRSeconds: c.RRTime.Seconds(),
		RRSize: c.RRSize, CRRSeconds: c.CRRTime.Seconds(), CRRWorkers: c.CRRWorkers, Tests: c.tests()}
	if slices.ContainsFunc(s.Tests, isAppTest) {
		a := c.appSettings()
		s.Apps = &a
	}
	return s
}

// Estimate is roughly how long Run takes with c, lab setup excluded.
func (c Config) Estimate() time.Duration {
	c = c.withDefaults()
	// Per mode and run: the tests plus ~0.2 s of process starts and
	// readiness checks each (measured: 0.1-0.15 s).
	const overhead = 200 * time.Millisecond
	per := time.Duration(0)
	for _, t := range newTests(c.tests()) {
		d, _ := t.duration(c)
		per += d + overhead
	}
	return time.Duration(c.Runs*len(Modes)) * per
}
