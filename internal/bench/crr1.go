package bench

// crr1: connection setup as netperf's TCP_CRR measures it, from a C
// client, one connection at a time. The client (crr1.c) is compiled at run
// time with the machine's C compiler, static if it can be, so it is one
// more kind of binary on the fast path (a libc's connect(), not Go's).
// Its server is slimprobe crrserve -wait-eof on crr1Port, in every mode's
// server namespace: it answers the 1-byte request and closes once the
// client has, so the client closes first and TIME_WAIT stays on the
// client's side, as in TCP_CRR. With thousands of connections a second
// from one address to one port, the client's namespaces get
// net.ipv4.tcp_tw_reuse=1, so that ports in TIME_WAIT are reused instead of
// connect() failing with EADDRNOTAVAIL; in slim mode the client's sockets
// are host sockets in the client host's namespace, which is host mode's
// client namespace, so that one is set as well.
//
// In slim mode the run also yields the broker's handler time per connect:
// the client host's slimd histogram slim_broker_handler_seconds{op=
// "connect"}, scraped from its metrics endpoint (inside the lab host's
// namespace, with slimprobe get) before and after the client's run.

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/slimnet/slim/internal/bench/wire"
	"github.com/slimnet/slim/internal/lab"
)

//go:embed crr1.c
var crr1Source []byte

// crr1Port is crr1's server, apart from crr's: crr's server closes first.
const crr1Port = 7203

const (
	// crr1Acceptors: the server's thread handling one connection waits
	// for the client's FIN while the client connects again; a second
	// thread is already blocked in accept for it.
	crr1Acceptors = 2
	// crr1Warmup is the warm-up run per mode (also checks that the
	// client works there).
	crr1Warmup = 50 * time.Millisecond
	// compileTimeout bounds the C compiler: seconds on an idle machine,
	// more on a 2-core one busy with Go builds.
	compileTimeout = 2 * time.Minute
	// handlerMetric is the broker's handler time histogram, by op.
	handlerMetric = "slim_broker_handler_seconds"
	// twReuseSysctl is net.ipv4.tcp_tw_reuse, in the namespace of the
	// process that opens it.
	twReuseSysctl = "/proc/sys/net/ipv4/tcp_tw_reuse"
	// minBrokerShare: fewer of the client's connects than this share
	// observed by the broker means some of them fell back to the overlay.
	minBrokerShare = 0.9
)

// ccNames are the C compilers tried, after $CC.
var ccNames = []string{"cc", "gcc", "clang"}

// ParseCRR1 reads the crr1 client's JSON report. A report without any
// successful connection is an error.
func ParseCRR1(b []byte) (wire.CRR1Result, error) {
	var r wire.CRR1Result
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("parse crr1 output %q: %w", trim(strings.TrimSpace(string(b)), 80), err)
	}
	if r.Mode != "crr1" || r.Connections <= 0 || r.Seconds <= 0 {
		return r, fmt.Errorf("parse crr1 output: mode %q, %d connections in %gs (first error: %s)",
			r.Mode, r.Connections, r.Seconds, r.FirstError)
	}
	return r, nil
}

// findCC finds a C compiler: $CC if it names one, else the first of
// ccNames in PATH.
func findCC() (string, error) {
	names := ccNames
	if cc := os.Getenv("CC"); cc != "" {
		names = append([]string{cc}, names...)
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no C compiler (%s) in PATH", strings.Join(ccNames, ", "))
}

// compileCRR1 writes crr1.c into dir and compiles it with cc: static, or
// dynamic if static linking fails (no static libc). It returns the
// binary, whether it is static, and the compiler's version line.
func compileCRR1(ctx context.Context, cc, dir string) (bin string, static bool, version string, err error) {
	ctx, cancel := context.WithTimeout(ctx, compileTimeout)
	defer cancel()
	src := filepath.Join(dir, "crr1.c")
	if err := os.WriteFile(src, crr1Source, 0o644); err != nil {
		return "", false, "", err
	}
	bin = filepath.Join(dir, "crr1")
	build := func(extra ...string) error {
		args := append([]string{"-O2"}, extra...)
		args = append(args, "-o", bin, src)
		out, err := exec.CommandContext(ctx, cc, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", filepath.Base(cc), strings.Join(args, " "), err, trim(strings.TrimSpace(string(out)), 400))
		}
		return nil
	}
	static = true
	if serr := build("-static"); serr != nil {
		if ctx.Err() != nil {
			return "", false, "", serr
		}
		static = false
		if err := build(); err != nil {
			return "", false, "", errors.Join(err, serr)
		}
	}
	version = filepath.Base(cc)
	if out, err := exec.CommandContext(ctx, cc, "--version").Output(); err == nil {
		if line, _, _ := strings.Cut(string(out), "\n"); strings.TrimSpace(line) != "" {
			version = strings.TrimSpace(line)
		}
	}
	return bin, static, version, nil
}

// crr1Test is crr1: its state is the client it compiled.
type crr1Test struct {
	// bin is the compiled client.
	bin string
	// measured counts measurements per mode: with Config.Policies, the
	// run with policies goes first on odd ones, second on even ones.
	measured map[string]int
}

func (*crr1Test) name() string { return TestCRR1 }

// needs is nothing: check finds a C compiler itself ($CC, or one of
// ccNames).
func (*crr1Test) needs() []tool { return nil }

// duration: with variants (policies, a service), two of the three modes
// run the client once more per variant and wait for the hosts to load and
// drop it (about a second).
func (*crr1Test) duration(c Config) (time.Duration, time.Duration) {
	n := 0
	if c.Policies > 0 {
		n++
	}
	if c.Service {
		n++
	}
	if n == 0 {
		return c.CRRTime, c.CRRTime
	}
	d := time.Duration(n)
	return c.CRRTime + 2*d*(c.CRRTime+time.Second)/3, (d+1)*c.CRRTime + 2*d*policyWait
}

func (t *crr1Test) server() server { return t }

// check finds a C compiler and builds crr1's client into the benchmark's
// directory.
func (t *crr1Test) check(ctx context.Context, r *runner) error {
	cc, err := findCC()
	if err != nil {
		return fmt.Errorf("%w (Debian packages gcc and libc6-dev; scripts/deps.sh installs them)", err)
	}
	dir, err := r.tempDir()
	if err != nil {
		return err
	}
	bin, static, version, err := compileCRR1(ctx, cc, dir)
	if err != nil {
		return err
	}
	t.bin = bin
	r.report.Settings.CRR1 = &CRR1Settings{Seconds: r.cfg.CRRTime.Seconds(), Compiler: version, Static: static, Policies: r.cfg.Policies, Service: r.cfg.Service}
	if !static {
		r.warn("crr1: the C client is linked dynamically: static linking failed (Debian's libc6-dev has the static libc)")
	}
	return nil
}

// prepare sets tcp_tw_reuse in every mode's client namespace.
func (t *crr1Test) prepare(ctx context.Context, r *runner) error {
	for _, e := range r.envs {
		if err := r.setTWReuse(ctx, e.client); err != nil {
			return fmt.Errorf("%s: %w", e.mode, err)
		}
	}
	r.report.Settings.CRR1.TWReuse = true
	return nil
}

// start starts crr1's server, apart from crr's: crr1's client closes
// first, so the server waits for its FIN.
func (t *crr1Test) start(ctx context.Context, r *runner, e *env) (*proc, int) {
	return r.start(ctx, e.server, r.cfg.Probe, "crrserve", "-addr", fmt.Sprintf("0.0.0.0:%d", crr1Port),
		"-acceptors", strconv.Itoa(crr1Acceptors), "-wait-eof"), crr1Port
}

// warmup runs the client briefly.
func (t *crr1Test) warmup(ctx context.Context, r *runner, e *env) error {
	_, err := t.run(ctx, r, e, crr1Warmup)
	return err
}

// setTWReuse sets net.ipv4.tcp_tw_reuse=1 in target's network namespace:
// /proc/sys/net shows the namespace of the process that opens it, so the
// write runs there, as a lab process. It stays set: the namespaces are
// the lab's, and the benchmark's tests are all that run in them.
func (r *runner) setTWReuse(ctx context.Context, target string) error {
	out, err := lab.Output(ctx, r.lab, target, "sh", "-c", "echo 1 >"+twReuseSysctl+" && cat "+twReuseSysctl)
	if err != nil {
		return fmt.Errorf("set tcp_tw_reuse in %s: %w", target, err)
	}
	if v := strings.TrimSpace(string(out)); v != "1" {
		return fmt.Errorf("set tcp_tw_reuse in %s: it reads %q", target, v)
	}
	return nil
}

// run runs the crr1 client in e's client for d, against e's server.
func (t *crr1Test) run(ctx context.Context, r *runner, e *env, d time.Duration) (wire.CRR1Result, error) {
	return t.runTo(ctx, r, e, r.dst(e, crr1Port), d)
}

// runTo runs the crr1 client in e's client for d, against addr.
func (t *crr1Test) runTo(ctx context.Context, r *runner, e *env, addr string, d time.Duration) (wire.CRR1Result, error) {
	out, _, err := r.clientCommand(ctx, e, t.bin, addr, strconv.FormatFloat(d.Seconds(), 'f', -1, 64))
	res, perr := ParseCRR1(out)
	if perr != nil && (len(out) > 0 || err == nil) {
		err = perr // the report says more than the exit status
	}
	if err != nil {
		return res, fmt.Errorf("crr1 client: %w", err)
	}
	return res, nil
}

// crr1Variant is crr1 measured once more in a measurement, in another
// setting, and reported as its rate over the plain run's: with
// Config.Policies policies in force (policies.go), or through a service
// (Config.Service, services.go).
type crr1Variant struct {
	fig, what string
	// with sets the variant up in e, runs run with the address the
	// client dials, and undoes it.
	with func(ctx context.Context, e *env, run func(addr string) error) error
}

// crr1Variants are the variants Config asks for (none in host mode).
func (r *runner) crr1Variants(e *env) []crr1Variant {
	if e.mode == ModeHost {
		return nil
	}
	var vs []crr1Variant
	if r.cfg.Policies > 0 {
		vs = append(vs, crr1Variant{fig: FigCRR1PolicyRatio, what: fmt.Sprintf("with %d policies", r.cfg.Policies),
			with: func(ctx context.Context, e *env, run func(string) error) error {
				return r.withPolicies(ctx, e, func() error { return run(r.dst(e, crr1Port)) })
			}})
	}
	if r.cfg.Service {
		vs = append(vs, crr1Variant{fig: FigCRR1ServiceRatio, what: "through a service", with: r.withService})
	}
	return vs
}

// measure measures crr1 in e, and each variant's rate over the plain
// run's, side by side; the variants run first in odd measurements and
// last in even ones, so that neither order favours them.
func (t *crr1Test) measure(ctx context.Context, r *runner, e *env) ([]value, error) {
	variants := r.crr1Variants(e)
	if len(variants) == 0 {
		return t.measureOnce(ctx, r, e)
	}
	if t.measured == nil {
		t.measured = map[string]int{}
	}
	t.measured[e.mode]++
	first := t.measured[e.mode]%2 == 1
	rates := make([]float64, len(variants))
	runVariants := func() error {
		for i, v := range variants {
			err := v.with(ctx, e, func(addr string) error {
				res, err := t.runTo(ctx, r, e, addr, r.cfg.CRRTime)
				rates[i] = res.CPS
				if err == nil && res.Errors > 0 {
					r.warn("%s crr1 %s: %d of %d connections failed (first: %s)", e.mode, v.what,
						res.Errors, res.Errors+res.Connections, res.FirstError)
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("%s: %w", v.what, err)
			}
		}
		return nil
	}
	if first {
		if err := runVariants(); err != nil {
			return nil, err
		}
	}
	vals, err := t.measureOnce(ctx, r, e)
	if err != nil {
		return nil, err
	}
	if !first {
		// The per-side CPU figures (added after measure) are the plain
		// run's.
		sides, sidesErr := r.sides, r.sidesErr
		if err := runVariants(); err != nil {
			return nil, err
		}
		r.sides, r.sidesErr = sides, sidesErr
	}
	for _, v := range vals {
		if v.id == FigCRR1Rate && v.v > 0 {
			for i, vr := range variants {
				vals = append(vals, value{id: vr.fig, v: rates[i] / v.v, show: "× " + vr.what})
			}
			break
		}
	}
	return vals, nil
}

// measureOnce measures crr1 in e: one run of the client and, in slim
// mode, the broker's handler times over it.
func (t *crr1Test) measureOnce(ctx context.Context, r *runner, e *env) ([]value, error) {
	var before Histogram
	var beforeErr error
	if e.mode == ModeSlim {
		before, beforeErr = r.handlerHistogram(ctx)
	}
	res, err := t.run(ctx, r, e, r.cfg.CRRTime)
	if err != nil {
		return nil, err
	}
	var slimd *time.Duration
	if r.sides != nil {
		slimd = &r.sides.clientSlimd
	}
	if res.Errors > 0 {
		r.warn("%s crr1: %d of %d connections failed (first: %s)", e.mode, res.Errors, res.Errors+res.Connections, res.FirstError)
	}
	cpu, err := probeCPU(res.CPUStart, res.CPUEnd)
	if err != nil {
		return nil, err
	}
	var handler *Histogram
	if e.mode == ModeSlim {
		after, err := r.handlerHistogram(ctx)
		h, err := handlerRun(before, after, errors.Join(beforeErr, err))
		switch {
		case err != nil:
			r.warn("slim crr1: broker handler times not measured: %v", err)
		case h.Total() < minBrokerShare*float64(res.Connections):
			r.warn("slim crr1: the broker handled %.0f of the client's %d connects: the others fell back to the overlay",
				h.Total(), res.Connections)
		}
		if err == nil {
			handler = &h
		}
	}
	return crr1Values(res, cpu, slimd, handler), nil
}

// crr1Values are crr1's figures: from the client's report, the machine's
// CPU time over its loop, the client host's slimd CPU time over the
// client's command (nil if not measured) and, in slim mode, the broker's
// connect handler histogram of the run (nil without; its quantiles are
// in seconds, the figures in µs).
func crr1Values(res wire.CRR1Result, cpu time.Duration, slimd *time.Duration, handler *Histogram) []value {
	n := float64(res.Connections)
	vals := []value{
		{id: FigCRR1Rate, v: res.CPS, show: "conn/s"},
		{id: FigCRR1P50, v: res.P50, show: "µs p50"},
		{id: FigCRR1P99, v: res.P99, show: "µs p99"},
		perOp(FigCRR1CPU, cpu, n),
	}
	if slimd != nil {
		vals = append(vals, value{id: FigCRR1SlimdCPU, v: cpuIn(unitCPUPerOperation, *slimd) / n, show: "slimd µs/conn"})
	}
	if handler == nil {
		return vals
	}
	for _, q := range []struct {
		id   string
		q    float64
		show string
	}{{FigCRR1HandlerP50, 0.50, "µs handler p50"}, {FigCRR1HandlerP99, 0.99, "µs handler p99"}} {
		if v, ok := handler.Quantile(q.q); ok {
			vals = append(vals, value{id: q.id, v: v * 1e6, show: q.show})
		}
	}
	return vals
}

// handlerRun is the handler histogram of a run: after minus before, with
// at least one observation.
func handlerRun(before, after Histogram, scrapeErr error) (Histogram, error) {
	if scrapeErr != nil {
		return Histogram{}, scrapeErr
	}
	h, err := after.Sub(before)
	if err != nil {
		return Histogram{}, err
	}
	if h.Total() == 0 {
		return Histogram{}, fmt.Errorf("no connect in %s{op=\"connect\"} during the run", handlerMetric)
	}
	return h, nil
}

// handlerHistogram scrapes the client host's slimd for the broker's
// connect handler histogram. The metrics are served on loopback inside
// the lab host's namespace, so slimprobe fetches them from there.
func (r *runner) handlerHistogram(ctx context.Context) (Histogram, error) {
	out, err := lab.Output(ctx, r.lab, clientHost, r.cfg.Probe, "get", "-url", "http://"+lab.MetricsAddr+"/metrics")
	if err != nil {
		return Histogram{}, fmt.Errorf("%s slimd metrics: %w", clientHost, err)
	}
	h, err := ParseHistogram(bytes.NewReader(out), handlerMetric, map[string]string{"op": "connect"})
	if err != nil {
		return Histogram{}, fmt.Errorf("%s slimd metrics: %w", clientHost, err)
	}
	return h, nil
}
