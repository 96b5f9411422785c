package wire

import (
	"math"
	"time"

	"github.com/prometheus/procfs"
)

// userHZ is the unit of /proc/stat's CPU times. It is part of Linux's ABI
// (USER_HZ, what sysconf(_SC_CLK_TCK) returns): 100 on every architecture
// we build for, whatever the kernel's CONFIG_HZ. procfs divides by it to
// give seconds; CPUTimes keeps the kernel's whole ticks.
const userHZ = 100

// CPUTimes are the machine's cumulative CPU times, /proc/stat's aggregate
// "cpu" line, in USER_HZ ticks summed over all CPUs. guest and guest_nice
// are left out: the kernel counts them in user and nice already. The
// reports carry two, read right before and after the timed loop, so that
// the window is exactly the loop.
type CPUTimes struct {
	User    uint64 `json:"user"`
	Nice    uint64 `json:"nice"`
	System  uint64 `json:"system"`
	Idle    uint64 `json:"idle"`
	IOWait  uint64 `json:"iowait"`
	IRQ     uint64 `json:"irq"`
	SoftIRQ uint64 `json:"softirq"`
	Steal   uint64 `json:"steal"`
}

// ReadCPUTimes reads the machine's CPU times now from fs's stat file
// (procfs.NewDefaultFS for the machine's; tests point procfs.NewFS at a
// fixture directory).
func ReadCPUTimes(fs procfs.FS) (CPUTimes, error) {
	st, err := fs.Stat()
	if err != nil {
		return CPUTimes{}, err
	}
	c := st.CPUTotal
	ticks := func(seconds float64) uint64 { return uint64(math.Round(seconds * userHZ)) }
	return CPUTimes{User: ticks(c.User), Nice: ticks(c.Nice), System: ticks(c.System), Idle: ticks(c.Idle),
		IOWait: ticks(c.Iowait), IRQ: ticks(c.IRQ), SoftIRQ: ticks(c.SoftIRQ), Steal: ticks(c.Steal)}, nil
}

// busyTicks is the CPU time spent working: user, nice, system, irq and
// softirq. Steal (the hypervisor ran someone else) and iowait (idle with
// I/O pending) are not work done on this machine.
func (c CPUTimes) busyTicks() uint64 {
	return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ
}

// BusySince is the CPU time the whole machine worked between start and c
// (c read after start). Counters that went backwards (they do not; a
// wrong order of arguments would) give zero.
func (c CPUTimes) BusySince(start CPUTimes) time.Duration {
	b, a := c.busyTicks(), start.busyTicks()
	if b < a {
		return 0
	}
	return time.Duration(b-a) * (time.Second / userHZ)
}
