package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of /proc/stat's CPU times. It is part of Linux's ABI
// (USER_HZ, what sysconf(_SC_CLK_TCK) returns): 100 on every architecture
// we build for, whatever the kernel's CONFIG_HZ.
const userHZ = 100

// CPUTimes are the machine's cumulative CPU times from /proc/stat's "cpu"
// line, in USER_HZ ticks, summed over all CPUs.
type CPUTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

// ParseCPULine parses /proc/stat's aggregate line, "cpu  user nice system
// idle iowait irq softirq steal guest guest_nice". Older kernels print
// fewer fields (the missing ones are zero); at least user, nice, system and
// idle must be there. guest and guest_nice are left out: they are already
// counted in user and nice.
func ParseCPULine(line string) (CPUTimes, error) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != "cpu" {
		return CPUTimes{}, fmt.Errorf("parse /proc/stat: %q is not the aggregate cpu line", trim(line, 40))
	}
	f = f[1:]
	if len(f) < 4 {
		return CPUTimes{}, fmt.Errorf("parse /proc/stat: %d cpu fields, want at least 4", len(f))
	}
	var v [8]uint64
	for i := 0; i < len(v) && i < len(f); i++ {
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return CPUTimes{}, fmt.Errorf("parse /proc/stat: field %d: %w", i+1, err)
		}
		v[i] = n
	}
	return CPUTimes{User: v[0], Nice: v[1], System: v[2], Idle: v[3], IOWait: v[4], IRQ: v[5], SoftIRQ: v[6], Steal: v[7]}, nil
}

// ParseProcStat reads the aggregate cpu line of a /proc/stat listing.
func ParseProcStat(r io.Reader) (CPUTimes, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "cpu ") {
			return ParseCPULine(line)
		}
	}
	if err := sc.Err(); err != nil {
		return CPUTimes{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	return CPUTimes{}, errors.New("parse /proc/stat: no aggregate cpu line")
}

// ReadCPUTimes reads the machine's CPU times now.
func ReadCPUTimes() (CPUTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return CPUTimes{}, err
	}
	defer f.Close()
	return ParseProcStat(f)
}

// busyTicks is the CPU time spent working: user, nice, system, irq and
// softirq. Steal (the hypervisor ran someone else) and iowait (idle with
// I/O pending) are not work done on this machine.
func (c CPUTimes) busyTicks() uint64 {
	return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ
}

func (c CPUTimes) totalTicks() uint64 {
	return c.busyTicks() + c.Idle + c.IOWait + c.Steal
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

// UtilizationSince is the busy share of all CPUs' time between start and
// c, from 0 to 1.
func (c CPUTimes) UtilizationSince(start CPUTimes) float64 {
	b, a := c.busyTicks(), start.busyTicks()
	t, s := c.totalTicks(), start.totalTicks()
	if b < a || t <= s {
		return 0
	}
	return float64(b-a) / float64(t-s)
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
