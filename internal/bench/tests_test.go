package bench

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/lab"
)

// The registry is the one list of tests: names, run order, figures.
func TestRegistry(t *testing.T) {
	if want := []string{TestTCP1, TestTCP4, TestRR, TestCRR, TestCRR1}; !slices.Equal(CoreTests, want) {
		t.Errorf("CoreTests = %v, want %v", CoreTests, want)
	}
	if want := []string{TestMemcached, TestNginx, TestNginxClose, TestPgbench, TestRedis}; !slices.Equal(AppTests, want) {
		t.Errorf("AppTests = %v, want %v", AppTests, want)
	}
	figs := map[string]int{}
	for _, d := range figureDefs {
		if !slices.Contains(Tests, d.test) {
			t.Errorf("figure %s: test %q is not registered", d.id, d.test)
		}
		figs[d.test]++
	}
	for _, name := range Tests {
		if figs[name] == 0 {
			t.Errorf("test %s has no figures", name)
		}
	}
	if got := testNames(newTests([]string{TestRedis, TestTCP1, TestCRR1})); !slices.Equal(got, []string{TestTCP1, TestCRR1, TestRedis}) {
		t.Errorf("newTests: %v, want run order", got)
	}
	// Each run gets fresh tests: they keep state (crr1's binary).
	if a, b := newTests(Tests), newTests(Tests); a[4] == b[4] {
		t.Error("newTests returned the same crr1 test twice")
	}
	// nginx and nginx-close measure one nginx.
	ts := newTests([]string{TestNginx, TestNginxClose, TestMemcached})
	if ts[1].server() == nil || ts[1].server() != ts[2].server() || ts[0].server() == ts[1].server() {
		t.Errorf("servers: %v %v %v", ts[0].server(), ts[1].server(), ts[2].server())
	}
}

func TestDurations(t *testing.T) {
	c := Config{AppTime: 1500 * time.Millisecond}.withDefaults()
	want := map[string][2]time.Duration{
		TestTCP1: {8 * time.Second, 8 * time.Second}, TestTCP4: {8 * time.Second, 8 * time.Second},
		TestRR: {5 * time.Second, 5 * time.Second}, TestCRR: {5 * time.Second, 5 * time.Second}, TestCRR1: {5 * time.Second, 5 * time.Second},
		// Whole seconds, rounded up.
		TestMemcached: {2 * time.Second, 2 * time.Second}, TestNginx: {2 * time.Second, 2 * time.Second},
		TestNginxClose: {2 * time.Second, 2 * time.Second}, TestPgbench: {2 * time.Second, 2 * time.Second},
		// redis-benchmark counts requests: slower modes take longer.
		TestRedis: {2 * time.Second, 8 * time.Second},
	}
	for _, tt := range newTests(Tests) {
		d, limit := tt.duration(c)
		if w := want[tt.name()]; d != w[0] || limit != w[1] {
			t.Errorf("%s: %v, at most %v; want %v, %v", tt.name(), d, limit, w[0], w[1])
		}
	}
}

// fakeTest is a test that checks what checkTests does with it.
type fakeTest struct {
	noServer
	n        string
	tools    []tool
	checkErr error
	checked  bool
}

func (f *fakeTest) name() string                                   { return f.n }
func (f *fakeTest) needs() []tool                                  { return f.tools }
func (f *fakeTest) duration(Config) (time.Duration, time.Duration) { return 0, 0 }
func (f *fakeTest) measure(context.Context, *runner, *env) ([]value, error) {
	return nil, nil
}

func (f *fakeTest) check(context.Context, *runner) error {
	f.checked = true
	return f.checkErr
}

func TestCheckTests(t *testing.T) {
	there := func() error { return nil }
	gone := func() error { return errors.New("no") }
	newRunner := func(named bool) (*runner, []*fakeTest) {
		fs := []*fakeTest{
			{n: "ok", tools: []tool{{what: "sh", pkg: "dash"}, {what: "a user", pkg: "p", find: there}}},
			{n: "missing", tools: []tool{{what: "no-such-command-here", pkg: "nothing"}, {what: "a file", pkg: "files", find: gone}}},
			{n: "broken", checkErr: errors.New("no compiler")},
		}
		r := &runner{pr: lab.NewProgress(nil), report: Report{Warnings: []string{}}}
		if named {
			r.cfg.Tests = []string{"ok", "missing", "broken"}
		}
		for _, f := range fs {
			r.tests = append(r.tests, f)
		}
		return r, fs
	}

	r, fs := newRunner(false)
	if err := r.checkTests(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := testNames(r.tests); !slices.Equal(got, []string{"ok"}) {
		t.Errorf("tests left: %v", got)
	}
	if fs[1].checked {
		t.Error("check ran although needs are missing")
	}
	want := []string{
		"missing: not installed: no-such-command-here (Debian package nothing), a file (Debian package files) (scripts/deps.sh installs them); the test is left out",
		"broken: no compiler; the test is left out",
	}
	if !slices.Equal(r.report.Warnings, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(r.report.Warnings, "\n"), strings.Join(want, "\n"))
	}

	// Named tests must run: what they lack is an error.
	r, _ = newRunner(true)
	err := r.checkTests(t.Context())
	if err == nil || !strings.Contains(err.Error(), "missing: not installed") || !strings.Contains(err.Error(), "broken: no compiler") {
		t.Errorf("named tests: %v", err)
	}
	if len(r.report.Warnings) != 0 {
		t.Errorf("warnings %v", r.report.Warnings)
	}
}

func TestDropTest(t *testing.T) {
	r := &runner{pr: lab.NewProgress(nil), tests: newTests([]string{TestNginx, TestNginxClose})}
	r.dropTest(TestNginx, errors.New("nginx: exited"))
	r.dropTest(TestNginx, errors.New("again"))
	if got := testNames(r.tests); !slices.Equal(got, []string{TestNginxClose}) || r.failures != 1 || r.done != 1 {
		t.Errorf("tests %v, %d failures in %d", got, r.failures, r.done)
	}
	if !r.has(TestNginxClose) || r.has(TestNginx) {
		t.Error("has")
	}
}
