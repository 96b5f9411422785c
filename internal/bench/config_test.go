package bench

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Config
		want Config
	}{
		{"full", Config{}, Config{Runs: 5, TCPTime: 8 * time.Second, RRTime: 5 * time.Second, CRRTime: 5 * time.Second,
			AppTime: 3 * time.Second, RRSize: 1, CRRWorkers: 4}},
		{"quick", Config{Quick: true}, Config{Quick: true, Runs: 3, TCPTime: 2 * time.Second, RRTime: time.Second, CRRTime: time.Second,
			AppTime: time.Second, RRSize: 1, CRRWorkers: 4}},
		{"quick, one run", Config{Quick: true, Runs: 1, RRTime: 3 * time.Second}, Config{Quick: true, Runs: 1, TCPTime: 2 * time.Second,
			RRTime: 3 * time.Second, CRRTime: time.Second, AppTime: time.Second, RRSize: 1, CRRWorkers: 4}},
		{"tests", Config{Tests: []string{TestRedis}}, Config{Runs: 5, TCPTime: 8 * time.Second, RRTime: 5 * time.Second,
			CRRTime: 5 * time.Second, AppTime: 3 * time.Second, RRSize: 1, CRRWorkers: 4, Tests: []string{TestRedis}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in.withDefaults(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Probe: "/bin/slimprobe"}.withDefaults()
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"no probe":      func(c *Config) { c.Probe = "" },
		"runs":          func(c *Config) { c.Runs = maxRuns + 1 },
		"negative runs": func(c *Config) { c.Runs = -1 },
		"rr size":       func(c *Config) { c.RRSize = -1 },
		"workers":       func(c *Config) { c.CRRWorkers = 1000 },
		"rr time":       func(c *Config) { c.RRTime = -time.Second },
		"app time":      func(c *Config) { c.AppTime = -time.Second },
		"no tests":      func(c *Config) { c.Tests = []string{} },
		"unknown test":  func(c *Config) { c.Tests = []string{"kafka"} },
		"test twice":    func(c *Config) { c.Tests = []string{TestRR, TestRR} },
	} {
		t.Run(name, func(t *testing.T) {
			c := ok
			mut(&c)
			if err := c.validate(); err == nil {
				t.Errorf("%+v: want an error", c)
			}
		})
	}
}

func TestConfigTests(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Config
		want []string
	}{
		{"default", Config{}, Tests},
		{"no apps", Config{NoApps: true}, CoreTests},
		// Run order, whatever the order asked for; NoApps yields to an
		// explicit list.
		{"explicit", Config{NoApps: true, Tests: []string{TestRedis, TestTCP1, TestMemcached}}, []string{TestTCP1, TestMemcached, TestRedis}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in.tests(); !slices.Equal(got, tc.want) {
				t.Errorf("tests() = %v, want %v", got, tc.want)
			}
		})
	}
	if s := (Config{NoApps: true}).withDefaults().settings(); s.Apps != nil {
		t.Errorf("no apps: settings %+v", s.Apps)
	}
	if s := (Config{Tests: []string{TestPgbench}}).withDefaults().settings(); s.Apps == nil || s.Apps.Seconds != 3 || s.Apps.PgbenchClients != pgbenchClients {
		t.Errorf("pgbench: settings %+v", s.Apps)
	}
}

func TestTCPSeconds(t *testing.T) {
	for in, want := range map[time.Duration]int{0: 1, 300 * time.Millisecond: 1, time.Second: 1, 1500 * time.Millisecond: 2, 8 * time.Second: 8} {
		if got := (Config{TCPTime: in}).tcpSeconds(); got != want {
			t.Errorf("tcpSeconds(%v) = %d, want %d", in, got, want)
		}
	}
}

// The time budgets: the full run under 15 minutes and --quick under 3,
// the lab's and the application servers' setup and teardown (~10 s
// measured) included, with a margin for a busy machine.
func TestEstimateWithinBudget(t *testing.T) {
	const setup = 30 * time.Second
	if d := (Config{}).Estimate() + setup; d > 13*time.Minute {
		t.Errorf("full run estimated at %v", d)
	}
	if d := (Config{Quick: true}).Estimate() + setup; d > 160*time.Second {
		t.Errorf("quick run estimated at %v", d)
	}
	if d := (Config{NoApps: true}).Estimate(); d > (Config{}).Estimate()*3/4 {
		t.Errorf("without the applications: estimated at %v", d)
	}
}
