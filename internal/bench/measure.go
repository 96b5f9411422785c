package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"

	"github.com/slimnet/slim/internal/bench/wire"
	"github.com/slimnet/slim/internal/lab"
)

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

// probeCPU is the machine's busy CPU time over a probe's timed window.
func probeCPU(start, end wire.CPUTimes) (time.Duration, error) {
	if start == (wire.CPUTimes{}) || end == (wire.CPUTimes{}) {
		// An older slimprobe sent /proc/stat's line as cpuStatStart
		// and cpuStatEnd instead.
		return 0, errors.New("the report has no CPU times (a slimprobe from another build than slimctl's?)")
	}
	return end.BusySince(start), nil
}

// ErrNoIface means the interface is not in the namespace.
var ErrNoIface = errors.New("no such interface")

// ifaceBytes is iface's received plus sent bytes in the network namespace
// of process pid (/proc/PID/net/dev shows the process's namespace).
func ifaceBytes(fs procfs.FS, pid int, iface string) (uint64, error) {
	p, err := fs.Proc(pid)
	if err != nil {
		return 0, err
	}
	dev, err := p.NetDev()
	if err != nil {
		return 0, fmt.Errorf("net/dev of pid %d: %w", pid, err)
	}
	c, ok := dev[iface]
	if !ok {
		return 0, fmt.Errorf("%s in the namespace of pid %d: %w", iface, pid, ErrNoIface)
	}
	return c.RxBytes + c.TxBytes, nil
}
