package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/procfs"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/lab"
)

// Ports of the benchmark's servers, the same in every mode's server
// namespace. iperf3 gets a fresh port per test (see tcpTest.measure).
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

// benchLabel is the app label of the benchmark's containers.
const benchLabel = "slim-bench"

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
	// clientAddr is the client container's virtual IP (none in host
	// mode).
	clientAddr netip.Addr
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
	pr      *lab.Progress
	envs    []*env
	samples Samples
	report  Report
	// tests are the tests to run, in run order; a test whose needs are
	// missing or whose setup failed is taken out.
	tests []benchTest
	// dir is a temporary directory for the tests' files (crr1's client,
	// the applications' configuration and data), made when a test needs
	// it and removed at the end; see tempDir.
	dir string
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
	r := &runner{cfg: cfg, lab: cfg.Lab, pr: lab.NewProgress(cfg.Progress), samples: Samples{}, tests: newTests(cfg.tests()), proc: proc}
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
	if err := r.checkTests(ctx); err != nil {
		return nil, err
	}
	r.report.Settings.Tests = testNames(r.tests)
	if !slices.ContainsFunc(r.report.Settings.Tests, isAppTest) {
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
	est.Tests = testNames(r.tests)
	r.pr.Step("%d runs of %s, about %s", cfg.Runs, strings.Join(est.Tests, ", "), est.Estimate().Round(10*time.Second))
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
		for _, c := range []struct{ host, name, role string }{{serverHost, m.srv, "server"}, {clientHost, m.cli, "client"}} {
			ct, err := lab.Run(ctx, r.lab, lab.RunSpec{Host: c.host, Name: c.name, NoSlim: m.noSlim,
				Labels:  map[string]string{"app": benchLabel, benchModeLabel: m.mode, benchRoleLabel: c.role},
				Command: []string{"sleep", "infinity"}})
			if err != nil {
				return fmt.Errorf("container %s: %w", c.name, err)
			}
			r.created = append(r.created, c.name)
			if c.name == m.srv {
				e.addr = ct.IPv4
			} else {
				e.clientAddr = ct.IPv4
			}
		}
		r.envs = append(r.envs, e)
	}
	for _, e := range r.envs {
		if e.cgroups, err = sidesOf(e.client, e.server); err != nil {
			return err
		}
	}
	r.pr.Step("containers: overlay %s -> %s, slim %s -> %s", overlayClient, overlayServer, slimClient, slimServer)
	// Every mode has an rr and a crr server, whatever the tests: the
	// warm-ups below check with them that the clients work at all, and
	// the rr and crr tests measure against them.
	type baseServer struct {
		p    *proc
		port int
	}
	base := map[*env][]baseServer{}
	for _, e := range r.envs {
		e.nextPort = iperfBasePort
		base[e] = []baseServer{
			{r.start(ctx, e.server, r.cfg.Probe, "rrserve", "-addr", fmt.Sprintf("0.0.0.0:%d", rrPort)), rrPort},
			{r.start(ctx, e.server, r.cfg.Probe, "crrserve", "-addr", fmt.Sprintf("0.0.0.0:%d", crrPort),
				"-acceptors", strconv.Itoa(r.cfg.CRRWorkers)), crrPort},
		}
		for _, b := range base[e] {
			e.servers = append(e.servers, b.p)
		}
	}
	for _, e := range r.envs {
		for _, b := range base[e] {
			if err := r.serverReady(ctx, e, b.p, b.port); err != nil {
				return fmt.Errorf("%s: %w", e.mode, err)
			}
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
	r.pr.Step("servers ready: host %s, overlay %s, slim %s", r.envs[0].addr, r.envs[1].addr, r.envs[2].addr)
	return r.setupServers(ctx)
}

func (r *runner) dst(e *env, port int) string {
	return netip.AddrPortFrom(e.addr, uint16(port)).String()
}

// serverReady waits until p serves on port in e's server namespace, for
// e's client; for slim, first until the client's slimd knows the
// listener, so that the first connection already takes the fast path.
func (r *runner) serverReady(ctx context.Context, e *env, p *proc, port int) error {
	if e.mode == ModeSlim {
		if err := r.waitListeners(ctx, e.addr, port); err != nil {
			if p.exited() {
				return errors.New(p.failure())
			}
			return err
		}
	}
	if _, err := r.probe(ctx, e, "wait", "-addr", r.dst(e, port), "-timeout", readyTimeout.String()); err != nil {
		if p.exited() {
			return errors.New(p.failure())
		}
		return fmt.Errorf("server %s: %w", r.dst(e, port), err)
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

func (r *runner) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.report.Warnings = append(r.report.Warnings, msg)
	r.pr.Step("warning: %s", msg)
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
	rep.Seconds = math.Round(r.pr.Elapsed().Seconds()*10) / 10
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
	r.pr.Step("the benchmark's containers removed; the lab stays up")
	return nil
}

// tempDir is the benchmark's temporary directory, made on first use.
// Others may read it: the postgres user must reach its data directories.
func (r *runner) tempDir() (string, error) {
	if r.dir != "" {
		return r.dir, nil
	}
	dir, err := os.MkdirTemp("", "slim-bench-")
	if err != nil {
		return "", err
	}
	r.dir = dir
	return dir, os.Chmod(dir, 0o755)
}

// removeDir removes the temporary directory; the servers must be
// stopped.
func (r *runner) removeDir() error {
	if r.dir == "" {
		return nil
	}
	err := os.RemoveAll(r.dir)
	r.dir = ""
	return err
}

// path is a file in the benchmark's temporary directory (tempDir).
func (r *runner) path(elem ...string) string {
	return filepath.Join(append([]string{r.dir}, elem...)...)
}
