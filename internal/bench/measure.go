package bench

import (
	"context"
	"errors"
	"fmt"
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
func (r *runner) measure(ctx context.Context, run int, t benchTest, e *env) {
	test := t.name()
	var before uint64
	var vxErr error
	if r.report.FastPath.Checked {
		before, vxErr = r.vxlanBytes()
	}
	_, limit := t.duration(r.cfg)
	mctx, cancel := context.WithTimeout(ctx, limit+measureSlack)
	vals, err := t.measure(mctx, r, e)
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
	r.pr.Step("run %d/%d  %-11s  %-7s  %s", run, r.cfg.Runs, test, e.mode, strings.Join(parts, ", "))
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

// vxlanBytes reads the client host's vxlan counters from the namespace of
// its slimd (/proc/PID/net/dev shows the process's network namespace).
func (r *runner) vxlanBytes() (uint64, error) {
	if r.vxlanIface == "" || r.vxlanPID <= 0 {
		return 0, errors.New("no vxlan device or slimd pid")
	}
	return ifaceBytes(r.proc, r.vxlanPID, r.vxlanIface)
}

// probeCPU is the machine's busy CPU time over a probe's timed window.
// withProbeCPU appends to a slimprobe test's figures its CPU per
// operation, figure id over ops, from the CPU times of the probe's report.
func withProbeCPU(vals []value, id string, start, end wire.CPUTimes, ops float64) ([]value, error) {
	cpu, err := probeCPU(start, end)
	if err != nil {
		return nil, err
	}
	return append(vals, perOp(id, cpu, ops)), nil
}

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
