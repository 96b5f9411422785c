package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/procfs"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bench/wire"
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

// Ports of the benchmark's servers, the same in every mode's server
// namespace. iperf3 gets a fresh port per test (see runner.tcp).
const (
	rrPort        = 7201
	crrPort       = 7202
	iperfBasePort = 5201
	// maxRuns keeps iperf3's ports (two per run) below rrPort.
	maxRuns = 500
)

// Timeouts, generous for a 2-core machine shared with builds.
const (
	// readyTimeout bounds the wait for servers: listener published in the
	// store and seen by the client's slimd, then a first connection.
	readyTimeout = 30 * time.Second
	// iperfStartTimeout bounds the retries of an iperf3 client whose
	// server has not started listening yet.
	iperfStartTimeout = 15 * time.Second
	// serverExitWait: an iperf3 -1 server exits right after its test.
	serverExitWait = 5 * time.Second
	// upTimeout bounds lab.Up (slimd start and peer discovery).
	upTimeout = 2 * time.Minute
	// teardownTimeout bounds lab.Down or the removal of the containers.
	teardownTimeout = 2 * time.Minute
	// measureSlack is added to a test's duration for its deadline.
	measureSlack = 60 * time.Second
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
	if len(appTestsIn(s.Tests)) > 0 {
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
	for _, t := range c.tests() {
		switch t {
		case TestTCP1, TestTCP4:
			per += time.Duration(c.tcpSeconds()) * time.Second
		case TestRR:
			per += c.RRTime
		case TestCRR, TestCRR1:
			per += c.CRRTime
		default:
			per += time.Duration(c.appSeconds()) * time.Second
		}
		per += overhead
	}
	return time.Duration(c.Runs*len(Modes)) * per
}

// Sentinel errors callers branch on.
var (
	// ErrLabExists: Run would build a lab, but one exists.
	ErrLabExists = errors.New("a lab exists")
	// ErrNotSupported: the benchmark needs Linux, as the lab does.
	ErrNotSupported = lab.ErrNotSupported
)

// Container names of the benchmark (see lab.ValidateName).
const (
	overlayServer = "bench-ovl-srv"
	overlayClient = "bench-ovl-cli"
	slimServer    = "bench-slim-srv"
	slimClient    = "bench-slim-cli"
)

var benchContainers = []string{overlayServer, overlayClient, slimServer, slimClient}

// Hosts of the lab the benchmark uses: servers on h1, clients on h2.
const (
	serverHost = "h1"
	clientHost = "h2"
)

// env is one mode's pair of endpoints.
type env struct {
	mode string
	// server and client are lab targets: a host (h1, h2) or a container.
	server, client string
	// addr is the address the client dials: h1's underlay address or the
	// server container's virtual IP.
	addr netip.Addr
	// cgroups are the cgroups of its client, server and slimds.
	cgroups sides
	// nextPort is the next iperf3 port.
	nextPort int
	servers  []*proc
}

// runner is one benchmark run in progress.
type runner struct {
	cfg     Config
	lab     lab.Config
	pr      *progress
	envs    []*env
	samples Samples
	report  Report
	// tests are the tests to run; an application whose setup failed is
	// taken out.
	tests []string
	// apps is the application tests' state; nil without them.
	apps *apps
	// dir is a temporary directory for the tests' files (crr1's client,
	// the applications' configuration and data), made when a test needs
	// it and removed at the end; see tempDir.
	dir string
	// crr1Bin is crr1's compiled client.
	crr1Bin string
	// proc is /proc, where the machine's CPU times and the vxlan
	// device's counters are read.
	proc procfs.FS
	// vxlanPID is the process whose /proc/PID/net/dev shows the client
	// host's namespace: h2's slimd.
	vxlanPID   int
	vxlanIface string
	// sides is the CPU time per side over the last client command, nil
	// if it could not be read (sidesErr says why).
	sides    *sideCPU
	sidesErr error
	// created are the containers Run made, to remove when the lab stays.
	created  []string
	failures int
	done     int
}

// Run builds the lab (or, with Reuse, uses the running one), runs the
// benchmark, and tears down what it made, also when it fails or ctx is
// cancelled. It returns the report when measurements were made, together
// with an error if some of them failed.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(cfg.Probe); err != nil {
		return nil, fmt.Errorf("slimprobe: %w", err)
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		return nil, fmt.Errorf("iperf3 not found (install Debian's iperf3; scripts/deps.sh does): %w", err)
	}
	proc, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, lab: cfg.Lab, pr: newProgress(cfg.Progress), samples: Samples{}, tests: cfg.tests(), proc: proc}
	r.lab.Progress = nil
	if cfg.Progress != nil {
		r.lab.Progress = &labProgress{pr: r.pr}
	}
	r.report = Report{Schema: SchemaVersion, Started: time.Now().UTC().Truncate(time.Second), Modes: Modes,
		Settings: cfg.settings(), Machine: machine(), Warnings: []string{},
		FastPath: FastPath{OverlayBytes: map[string]uint64{}}}

	defer func() {
		// After teardown (deferred later, so run earlier): the servers
		// using the files are gone.
		err = errors.Join(err, r.removeDir())
	}()
	if err := r.checkTools(ctx); err != nil {
		return nil, err
	}
	r.report.Settings.Tests = slices.Clone(r.tests)
	if len(appTestsIn(r.tests)) == 0 {
		r.report.Settings.Apps = nil
	}
	if len(r.tests) == 0 {
		return nil, errors.New("no test left to run")
	}
	if !cfg.Reuse {
		if names := existingLab(); len(names) > 0 {
			return nil, fmt.Errorf("%w (%s): benchmark it with --reuse, or remove it with slimctl lab down", ErrLabExists, strings.Join(names, ", "))
		}
	}
	defer func() {
		err = errors.Join(err, r.teardown(ctx))
	}()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	est := cfg
	est.Tests = r.tests
	r.pr.step("%d runs of %s, about %s", cfg.Runs, strings.Join(r.tests, ", "), est.Estimate().Round(10*time.Second))
	for run := 1; run <= cfg.Runs; run++ {
		for _, test := range slices.Clone(r.tests) {
			for _, e := range r.envs {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				r.measure(ctx, run, test, e)
			}
		}
	}
	return r.finish(), r.failed()
}

// existingLab lists the lab's namespaces that exist.
func existingLab() []string {
	m, _ := filepath.Glob(lab.NetnsPath(lab.NetnsPrefix + "*"))
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

func (r *runner) setup(ctx context.Context) error {
	if !r.cfg.Reuse {
		lc := r.lab
		lc.Hosts = 2
		uctx, cancel := context.WithTimeout(ctx, upTimeout)
		err := lab.Up(uctx, lc)
		cancel()
		if err != nil {
			return fmt.Errorf("lab up: %w", err)
		}
	}
	l, err := lab.List(ctx, r.lab)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	hosts := map[string]lab.HostStatus{}
	for _, h := range l.Hosts {
		hosts[h.Name] = h
	}
	for _, h := range []string{serverHost, clientHost} {
		if st, ok := hosts[h]; !ok || !st.Alive {
			return fmt.Errorf("lab host %s: not there or its slimd is down (the benchmark needs h1 and h2)", h)
		}
	}
	r.report.Machine.Hosts = 2
	r.vxlanPID = hosts[clientHost].PID
	// Leftovers of an interrupted benchmark on a reused lab.
	for _, c := range l.Containers {
		if slices.Contains(benchContainers, c.Name) {
			if err := lab.Remove(ctx, r.lab, c.Name); err != nil {
				return fmt.Errorf("remove leftover container %s: %w", c.Name, err)
			}
		}
	}
	slimd2 := api.NewClient(lab.SocketPath(r.lab, clientHost))
	st, err := slimd2.Status(ctx)
	if err != nil {
		return fmt.Errorf("slimd %s: %w", clientHost, err)
	}
	r.vxlanIface = st.VXLANDevice
	r.report.FastPath.Iface = st.VXLANDevice
	if fp, err := slimd2.FastPath(ctx); err != nil {
		r.warn("fast path state unknown: %v", err)
	} else if !fp.Enabled || !fp.Active {
		r.warn("the fast path is not on (enabled %v, active %v): slim mode measures the overlay", fp.Enabled, fp.Active)
	}

	r.envs = []*env{{mode: ModeHost, server: serverHost, client: clientHost, addr: hosts[serverHost].UnderlayIP}}
	for _, m := range []struct {
		mode, srv, cli string
		noSlim         bool
	}{{ModeOverlay, overlayServer, overlayClient, true}, {ModeSlim, slimServer, slimClient, false}} {
		e := &env{mode: m.mode, server: m.srv, client: m.cli}
		for _, c := range []struct{ host, name string }{{serverHost, m.srv}, {clientHost, m.cli}} {
			ct, err := lab.Run(ctx, r.lab, lab.RunSpec{Host: c.host, Name: c.name, NoSlim: m.noSlim,
				Labels: map[string]string{"app": "slim-bench"}, Command: []string{"sleep", "infinity"}})
			if err != nil {
				return fmt.Errorf("container %s: %w", c.name, err)
			}
			r.created = append(r.created, c.name)
			if c.name == m.srv {
				e.addr = ct.IPv4
			}
		}
		r.envs = append(r.envs, e)
	}
	for _, e := range r.envs {
		if e.cgroups, err = sidesOf(e.client, e.server); err != nil {
			return err
		}
	}
	r.pr.step("containers: overlay %s -> %s, slim %s -> %s", overlayClient, overlayServer, slimClient, slimServer)
	ports := []int{rrPort, crrPort}
	crr1 := slices.Contains(r.tests, TestCRR1)
	if crr1 {
		ports = append(ports, crr1Port)
	}
	for _, e := range r.envs {
		e.nextPort = iperfBasePort
		e.servers = append(e.servers,
			r.start(ctx, e.server, r.cfg.Probe, "rrserve", "-addr", fmt.Sprintf("0.0.0.0:%d", rrPort)),
			r.start(ctx, e.server, r.cfg.Probe, "crrserve", "-addr", fmt.Sprintf("0.0.0.0:%d", crrPort),
				"-acceptors", strconv.Itoa(r.cfg.CRRWorkers)))
		if crr1 {
			// crr1's client closes first: the server waits for its FIN.
			e.servers = append(e.servers, r.start(ctx, e.server, r.cfg.Probe, "crrserve", "-addr", fmt.Sprintf("0.0.0.0:%d", crr1Port),
				"-acceptors", strconv.Itoa(crr1Acceptors), "-wait-eof"))
		}
	}
	for _, e := range r.envs {
		if err := r.ready(ctx, e, ports...); err != nil {
			return err
		}
		// Warm up: caches, neighbour entries, and a check that the
		// clients work at all before anything is measured.
		if _, err := r.probe(ctx, e, "rr", "-addr", r.dst(e, rrPort), "-n", "200", "-warmup", "0"); err != nil {
			return fmt.Errorf("%s: rr warm-up: %w", e.mode, err)
		}
		if _, err := r.probe(ctx, e, "crr", "-addr", r.dst(e, crrPort), "-n", "20"); err != nil {
			return fmt.Errorf("%s: crr warm-up: %w", e.mode, err)
		}
	}
	if _, err := r.vxlanBytes(); err != nil {
		r.warn("fast path not checked: %v", err)
	} else {
		r.report.FastPath.Checked = true
	}
	r.pr.step("servers ready: host %s, overlay %s, slim %s", r.envs[0].addr, r.envs[1].addr, r.envs[2].addr)
	if err := r.setupCRR1(ctx); err != nil {
		return err
	}
	return r.setupApps(ctx)
}

func (r *runner) dst(e *env, port int) string {
	return netip.AddrPortFrom(e.addr, uint16(port)).String()
}

// ready waits until e's servers on ports accept connections from e's
// client; for slim, first until the client's slimd knows the listeners,
// so that the first connection already takes the fast path.
func (r *runner) ready(ctx context.Context, e *env, ports ...int) error {
	for _, p := range e.servers {
		if p.exited() {
			return fmt.Errorf("%s: %s", e.mode, p.failure())
		}
	}
	if e.mode == ModeSlim {
		if err := r.waitListeners(ctx, e.addr, ports...); err != nil {
			return fmt.Errorf("%s: %w", e.mode, err)
		}
	}
	for _, port := range ports {
		if _, err := r.probe(ctx, e, "wait", "-addr", r.dst(e, port), "-timeout", readyTimeout.String()); err != nil {
			return fmt.Errorf("%s: server %s: %w", e.mode, r.dst(e, port), err)
		}
	}
	return nil
}

// waitListeners waits until the client host's slimd lists fast-path
// listeners for vip on every port.
func (r *runner) waitListeners(ctx context.Context, vip netip.Addr, ports ...int) error {
	c := api.NewClient(lab.SocketPath(r.lab, clientHost))
	deadline := time.Now().Add(readyTimeout)
	for {
		ls, err := c.Listeners(ctx, "")
		missing := slices.Clone(ports)
		for _, l := range ls {
			if l.VIP == vip {
				missing = slices.DeleteFunc(missing, func(p int) bool { return p == int(l.Port) })
			}
		}
		if err == nil && len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("listeners %v ports %v not published after %v (last error: %v)", vip, missing, readyTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// probe runs slimprobe in e's client and returns its stdout. slimprobe
// measures the machine's CPU time itself, over its measurement only.
func (r *runner) probe(ctx context.Context, e *env, args ...string) ([]byte, error) {
	out, _, err := r.clientCommand(ctx, e, append([]string{r.cfg.Probe}, args...)...)
	if err != nil {
		return out, fmt.Errorf("slimprobe %s: %w", args[0], err)
	}
	return out, nil
}

// clientCommand runs command in e's client. It returns the machine's CPU
// time over the command (/proc/stat), and keeps each side's (the cgroups'
// cpu.stat) in r.sides for measure.
func (r *runner) clientCommand(ctx context.Context, e *env, command ...string) ([]byte, time.Duration, error) {
	r.sides, r.sidesErr = nil, nil
	c0, err := wire.ReadCPUTimes(r.proc)
	if err != nil {
		return nil, 0, err
	}
	s0, serr := e.cgroups.read()
	out, err := lab.Output(ctx, r.lab, e.client, command...)
	s1, serr2 := e.cgroups.read()
	c1, cerr := wire.ReadCPUTimes(r.proc)
	if r.sidesErr = errors.Join(serr, serr2); r.sidesErr == nil {
		d := s1.since(s0)
		r.sides = &d
	}
	if err == nil {
		err = cerr
	}
	return out, c1.BusySince(c0), err
}

// measure runs one test in one mode and records its figures; a failure is
// recorded as a warning, and the benchmark goes on.
func (r *runner) measure(ctx context.Context, run int, test string, e *env) {
	var before uint64
	var vxErr error
	if r.report.FastPath.Checked {
		before, vxErr = r.vxlanBytes()
	}
	d := r.cfg.RRTime
	switch test {
	case TestTCP1, TestTCP4:
		d = time.Duration(r.cfg.tcpSeconds()) * time.Second
	case TestCRR, TestCRR1:
		d = r.cfg.CRRTime
	case TestRedis:
		// redis-benchmark counts requests: slower modes take longer.
		d = 4 * time.Duration(r.cfg.appSeconds()) * time.Second
	default:
		if isAppTest(test) {
			d = time.Duration(r.cfg.appSeconds()) * time.Second
		}
	}
	mctx, cancel := context.WithTimeout(ctx, d+measureSlack)
	var vals []value
	var err error
	switch test {
	case TestTCP1:
		vals, err = r.tcp(mctx, e, 1)
	case TestTCP4:
		vals, err = r.tcp(mctx, e, 4)
	case TestRR:
		vals, err = r.rr(mctx, e)
	case TestCRR:
		vals, err = r.crr(mctx, e)
	case TestCRR1:
		vals, err = r.crr1(mctx, e)
	default:
		vals, err = r.measureApp(mctx, test, e)
	}
	cancel()
	r.done++
	if err != nil {
		if ctx.Err() != nil {
			return // interrupted: Run returns ctx's error
		}
		r.failures++
		r.warn("run %d, %s, %s: %v", run, e.mode, test, err)
		return
	}
	if r.report.FastPath.Checked {
		after, err := r.vxlanBytes()
		if err = errors.Join(vxErr, err); err != nil {
			r.report.FastPath.Checked = false
			r.warn("fast path check abandoned: %v", err)
		} else if after >= before {
			r.report.FastPath.OverlayBytes[e.mode] += after - before
		}
	}
	vals = r.addSides(test, e, vals)
	var parts []string
	for _, v := range vals {
		r.samples.Add(v.id, e.mode, v.v)
		if v.show != "" {
			parts = append(parts, FormatValue(v.v)+" "+v.show)
		}
	}
	r.pr.step("run %d/%d  %-11s  %-7s  %s", run, r.cfg.Runs, test, e.mode, strings.Join(parts, ", "))
}

// value is one figure's value from one test; show is its unit in the
// progress line ("" keeps it out).
type value struct {
	id   string
	v    float64
	show string
	// work is what a CPU figure divides the CPU time by (GB or
	// operations); addSides divides each side's CPU time by it too.
	work float64
}

// perOp is a CPU-per-operation figure: cpu over ops, in µs, with ops as
// the work its per-side figures divide by.
func perOp(id string, cpu time.Duration, ops float64) value {
	return value{id: id, v: float64(cpu.Microseconds()) / ops, show: "CPU µs/op", work: ops}
}

// addSides adds the per-side CPU figures of the test's CPU figure, from
// the CPU time each side's cgroup used during the test's client command.
func (r *runner) addSides(test string, e *env, vals []value) []value {
	for _, v := range vals {
		if v.work <= 0 {
			continue
		}
		if r.sides == nil {
			r.warn("%s %s: CPU per side not measured: %v", e.mode, test, r.sidesErr)
			return vals
		}
		unit := figureUnit(v.id)
		for _, s := range []struct {
			side string
			cpu  time.Duration
		}{{sideClient, r.sides.client}, {sideServer, r.sides.server}, {sideSlimd, r.sides.slimd}} {
			vals = append(vals, value{id: sideFigureID(v.id, s.side), v: cpuIn(unit, s.cpu) / v.work})
		}
		return vals
	}
	return vals
}

// tcp runs iperf3 with streams streams, against a one-off server on a
// fresh port. iperf3's server closes and re-creates its listener after
// every test; a fresh server and port per test makes every test start
// the same way in every mode (and keeps slim mode clear of the previous
// listener while the broker retires it).
func (r *runner) tcp(ctx context.Context, e *env, streams int) ([]value, error) {
	port := e.nextPort
	e.nextPort++
	srv := r.start(ctx, e.server, "iperf3", "-s", "-1", "-p", strconv.Itoa(port))
	defer func() {
		if ctx.Err() != nil {
			srv.stop() // interrupted or out of time: no test to finish
			return
		}
		srv.finish(serverExitWait)
	}()
	if e.mode == ModeSlim {
		if err := r.waitListeners(ctx, e.addr, port); err != nil {
			return nil, err
		}
	}
	secs := strconv.Itoa(r.cfg.tcpSeconds())
	deadline := time.Now().Add(iperfStartTimeout)
	for {
		if srv.exited() {
			return nil, fmt.Errorf("iperf3 server: %s", srv.failure())
		}
		out, cpu, err := r.clientCommand(ctx, e, "iperf3", "-c", e.addr.String(), "-p", strconv.Itoa(port),
			"-t", secs, "-P", strconv.Itoa(streams), "-J")
		res, perr := ParseIperf3(out)
		if perr != nil && (errors.Is(perr, ErrIperf3) || err == nil) {
			err = perr // iperf3's own message says more than its exit code
		}
		if err == nil {
			gb := float64(res.Bytes) / 1e9
			return []value{
				{id: throughputFig(streams), v: res.BitsPerSecond / 1e9, show: "Gbit/s"},
				{id: tcpCPUFig(streams), v: cpu.Seconds() / gb, show: unitCPUPerGB, work: gb},
			}, nil
		}
		if !iperf3Retryable(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond) // the server is starting
	}
}

func throughputFig(streams int) string {
	if streams == 1 {
		return FigTCP1Throughput
	}
	return FigTCP4Throughput
}

func tcpCPUFig(streams int) string {
	if streams == 1 {
		return FigTCP1CPU
	}
	return FigTCP4CPU
}

func (r *runner) rr(ctx context.Context, e *env) ([]value, error) {
	out, err := r.probe(ctx, e, "rr", "-addr", r.dst(e, rrPort), "-size", strconv.Itoa(r.cfg.RRSize),
		"-duration", r.cfg.RRTime.String())
	if err != nil {
		return nil, err
	}
	res, err := ParseRR(out)
	if err != nil {
		return nil, err
	}
	cpu, err := probeCPU(res.CPUStart, res.CPUEnd)
	if err != nil {
		return nil, err
	}
	return []value{
		{id: FigRRP50, v: res.P50, show: "µs p50"},
		{id: FigRRP99, v: res.P99, show: "µs p99"},
		{id: FigRRRate, v: res.TPS, show: "/s"},
		perOp(FigRRCPU, cpu, float64(res.Transactions)),
	}, nil
}

func (r *runner) crr(ctx context.Context, e *env) ([]value, error) {
	out, err := r.probe(ctx, e, "crr", "-addr", r.dst(e, crrPort), "-workers", strconv.Itoa(r.cfg.CRRWorkers),
		"-duration", r.cfg.CRRTime.String())
	if err != nil {
		return nil, err
	}
	res, err := ParseCRR(out)
	if err != nil {
		return nil, err
	}
	if res.Errors > 0 {
		r.warn("%s crr: %d of %d connections failed (first: %s)", e.mode, res.Errors, res.Errors+res.Connections, res.FirstError)
	}
	cpu, err := probeCPU(res.CPUStart, res.CPUEnd)
	if err != nil {
		return nil, err
	}
	return []value{
		{id: FigCRRRate, v: res.CPS, show: "conn/s"},
		{id: FigCRRConnectP50, v: res.Connect.P50, show: "µs p50"},
		{id: FigCRRConnectP99, v: res.Connect.P99, show: "µs p99"},
		perOp(FigCRRCPU, cpu, float64(res.Connections)),
	}, nil
}

// vxlanBytes reads the client host's vxlan counters from the namespace of
// its slimd (/proc/PID/net/dev shows the process's network namespace).
func (r *runner) vxlanBytes() (uint64, error) {
	if r.vxlanIface == "" || r.vxlanPID <= 0 {
		return 0, errors.New("no vxlan device or slimd pid")
	}
	return ifaceBytes(r.proc, r.vxlanPID, r.vxlanIface)
}

func (r *runner) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.report.Warnings = append(r.report.Warnings, msg)
	r.pr.step("warning: %s", msg)
}

// finish builds the report from the samples.
func (r *runner) finish() *Report {
	rep := r.report
	rep.Figures, rep.Goals = r.samples.Figures(rep.Settings.Tests)
	rep.FastPath.judge()
	if rep.FastPath.Checked && !rep.FastPath.OnFastPath {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("slim mode's traffic crossed %s (%s, overlay mode: %s): not the fast path",
			rep.FastPath.Iface, FormatBytes(rep.FastPath.OverlayBytes[ModeSlim]), FormatBytes(rep.FastPath.OverlayBytes[ModeOverlay])))
	}
	rep.Seconds = math.Round(time.Since(r.pr.start).Seconds()*10) / 10
	return &rep
}

func (r *runner) failed() error {
	if r.failures == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d measurements failed (see the warnings)", r.failures, r.done)
}

// teardown stops the servers and removes what the benchmark made: the
// whole lab if it built it (unless Keep), else its containers. It runs
// also when ctx is cancelled.
func (r *runner) teardown(ctx context.Context) error {
	// Stopped in parallel: a server that must be asked to stop may take
	// a moment.
	var wg sync.WaitGroup
	for _, e := range r.envs {
		for _, p := range e.servers {
			wg.Go(p.stop)
		}
	}
	wg.Wait()
	var errs []error
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
	defer cancel()
	if !r.cfg.Reuse && !r.cfg.Keep {
		if err := lab.Down(tctx, r.lab); err != nil {
			errs = append(errs, fmt.Errorf("lab down: %w", err))
		}
		return errors.Join(errs...)
	}
	for _, name := range r.created {
		if err := lab.Remove(tctx, r.lab, name); err != nil {
			errs = append(errs, fmt.Errorf("remove container %s: %w", name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	r.pr.step("the benchmark's containers removed; the lab stays up")
	return nil
}

// machine describes this machine.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(string(b))
	}
	return m
}

// cpuModel finds the first "model name" in /proc/cpuinfo.
func cpuModel(cpuinfo string) string {
	for line := range strings.Lines(cpuinfo) {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
