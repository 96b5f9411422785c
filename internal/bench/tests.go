package bench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// Tests, in the order they run within a run.
const (
	TestTCP1 = "tcp1"
	TestTCP4 = "tcp4"
	TestRR   = "rr"
	TestCRR  = "crr"
	// TestCRR1 is crr from a C client, one connection at a time (see
	// crr1.go).
	TestCRR1 = "crr1"
	// The applications (see apps.go).
	TestMemcached  = "memcached"
	TestNginx      = "nginx"
	TestNginxClose = "nginx-close"
	TestPgbench    = "pgbench"
	TestRedis      = "redis"
)

var (
	// CoreTests are the network tests, in run order.
	CoreTests = testNames(coreTests())
	// AppTests are the application tests, in run order; they run after
	// the core tests in every run.
	AppTests = testNames(appTests())
	// Tests lists all tests in run order.
	Tests = slices.Concat(CoreTests, AppTests)
)

// benchTest is one test of the benchmark. Adding a test is adding a type
// that implements it to coreTests or appTests, and its figures to
// figureDefs. A test's value lives for one run: it may keep state, such as
// a binary it built or a size it chose in its warm-up.
type benchTest interface {
	// name is the test's name (Test*): what Config.Tests and --tests
	// take, and what the report's figures name.
	name() string
	// needs lists what the test needs on the machine. A test whose needs
	// are missing is left out with a warning, or fails the run when
	// Config.Tests names it.
	needs() []tool
	// check checks, before the lab is built, what needs cannot say (a
	// compiler that works); an error leaves the test out as a missing
	// need does.
	check(ctx context.Context, r *runner) error
	// duration is how long one measurement takes with c, as Estimate
	// counts it, and how long it may take at most (measure's deadline,
	// with measureSlack on top).
	duration(c Config) (expected, limit time.Duration)
	// server is the test's own server, started once per mode before
	// the runs; nil for none (tcp starts iperf3 per measurement; rr and
	// crr use the servers every run has, see runner.setup).
	server() server
	// measure runs the test once in e and returns its figures.
	measure(ctx context.Context, r *runner, e *env) ([]value, error)
}

// server is a test's server in every mode's server namespace. Tests may
// share one: nginx and nginx-close measure the same nginx.
type server interface {
	// prepare readies what every mode's server needs (files, data
	// directories, sysctls) before any starts.
	prepare(ctx context.Context, r *runner) error
	// start starts the server in e's server namespace and returns it
	// and the port where it serves.
	start(ctx context.Context, r *runner, e *env) (*proc, int)
	// warmup readies the test in e once its server answers, and checks
	// that its client works there.
	warmup(ctx context.Context, r *runner, e *env) error
}

// coreTests are the network tests, in run order.
func coreTests() []benchTest {
	return []benchTest{tcpTest{streams: 1}, tcpTest{streams: 4}, rrTest{}, crrTest{}, &crr1Test{}}
}

// appTests are the application tests, in run order (see apps.go).
func appTests() []benchTest {
	ngx := &nginxServer{}
	return []benchTest{&memcachedTest{}, &nginxTest{srv: ngx}, &nginxTest{srv: ngx, closeConns: true}, &pgbenchTest{}, &redisTest{}}
}

// newTests returns the named tests, in run order, ready for one run.
func newTests(names []string) []benchTest {
	var ts []benchTest
	for _, t := range slices.Concat(coreTests(), appTests()) {
		if slices.Contains(names, t.name()) {
			ts = append(ts, t)
		}
	}
	return ts
}

func testNames(ts []benchTest) []string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.name()
	}
	return names
}

// isAppTest tells the application tests from the core ones.
func isAppTest(test string) bool { return slices.Contains(AppTests, test) }

// tool is something a test needs on the machine: a command in PATH, or
// what find looks for; pkg is the Debian package it comes in.
type tool struct {
	what, pkg string
	find      func() error
}

// missing describes the tools that are not there.
func missing(tools []tool) []string {
	var m []string
	for _, t := range tools {
		find := t.find
		if find == nil {
			find = func() error { _, err := exec.LookPath(t.what); return err }
		}
		if find() != nil {
			m = append(m, fmt.Sprintf("%s (Debian package %s)", t.what, t.pkg))
		}
	}
	return m
}

// checkTests checks every test's needs, and runs its check, before
// anything is built. A test that fails is an error when Config.Tests
// names it; otherwise it is left out with a warning.
func (r *runner) checkTests(ctx context.Context) error {
	var errs []error
	for _, t := range slices.Clone(r.tests) {
		var err error
		if m := missing(t.needs()); len(m) > 0 {
			err = fmt.Errorf("not installed: %s (scripts/deps.sh installs them)", strings.Join(m, ", "))
		} else {
			err = t.check(ctx, r)
		}
		switch {
		case err == nil:
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case r.cfg.Tests != nil:
			errs = append(errs, fmt.Errorf("%s: %w", t.name(), err))
			continue
		}
		r.warn("%s: %v; the test is left out", t.name(), err)
		r.tests = slices.DeleteFunc(r.tests, func(u benchTest) bool { return u == t })
	}
	return errors.Join(errs...)
}

// has tells whether test is still to run.
func (r *runner) has(test string) bool {
	return slices.ContainsFunc(r.tests, func(t benchTest) bool { return t.name() == test })
}

// dropTest leaves test out of the rest of the run: its setup failed.
func (r *runner) dropTest(test string, err error) {
	if !r.has(test) {
		return
	}
	r.failures++
	r.done++
	r.warn("%s: %v; the test is left out", test, err)
	r.tests = slices.DeleteFunc(r.tests, func(t benchTest) bool { return t.name() == test })
}

// setupServers prepares and starts the tests' own servers in every mode
// and waits until they serve and their warm-ups pass. A test whose server
// fails is left out of the run (a warning, counted as a failed
// measurement); only a cancelled ctx fails the setup.
func (r *runner) setupServers(ctx context.Context) error {
	// The servers in run order, each once, with the tests they serve.
	var servers []server
	users := map[server][]string{}
	for _, t := range r.tests {
		s := t.server()
		if s == nil {
			continue
		}
		if users[s] == nil {
			servers = append(servers, s)
		}
		users[s] = append(users[s], t.name())
	}
	if len(servers) == 0 {
		return nil
	}
	if _, err := r.tempDir(); err != nil {
		return err
	}
	drop := func(s server, err error) {
		for _, t := range users[s] {
			r.dropTest(t, err)
		}
	}
	alive := func(s server) bool { return slices.ContainsFunc(users[s], r.has) }
	var prepared []server
	for _, s := range servers {
		err := s.prepare(ctx, r)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			drop(s, err)
			continue
		}
		prepared = append(prepared, s)
	}

	// Start every server in every mode, then wait for them: the modes'
	// servers start in parallel.
	type started struct {
		s    server
		e    *env
		p    *proc
		port int
	}
	var all []started
	for _, e := range r.envs {
		for _, s := range prepared {
			p, port := s.start(ctx, r, e)
			e.servers = append(e.servers, p)
			all = append(all, started{s, e, p, port})
		}
	}
	for _, st := range all {
		if !alive(st.s) {
			continue // failed in an earlier mode
		}
		err := r.serverReady(ctx, st.e, st.p, st.port)
		if err == nil {
			err = st.s.warmup(ctx, r, st.e)
		}
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		drop(st.s, fmt.Errorf("%s: %w", st.e.mode, err))
	}
	var names []string
	for _, s := range prepared {
		names = append(names, slices.DeleteFunc(slices.Clone(users[s]), func(t string) bool { return !r.has(t) })...)
	}
	r.pr.Step("test servers ready: %s", strings.Join(names, ", "))
	return nil
}
