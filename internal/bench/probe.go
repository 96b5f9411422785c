package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/procfs"

	"github.com/slimnet/slim/internal/bench/wire"
)

// ParseRR reads slimprobe rr's JSON report.
func ParseRR(b []byte) (wire.RRResult, error) {
	var r wire.RRResult
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("parse slimprobe rr output %q: %w", trim(strings.TrimSpace(string(b)), 80), err)
	}
	if r.Mode != "rr" || r.Transactions <= 0 || r.Seconds <= 0 {
		return r, fmt.Errorf("parse slimprobe rr output: mode %q, %d transactions in %gs", r.Mode, r.Transactions, r.Seconds)
	}
	return r, nil
}

// ParseCRR reads slimprobe crr's JSON report.
func ParseCRR(b []byte) (wire.CRRResult, error) {
	var r wire.CRRResult
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("parse slimprobe crr output %q: %w", trim(strings.TrimSpace(string(b)), 80), err)
	}
	if r.Mode != "crr" || r.Connections <= 0 || r.Seconds <= 0 {
		return r, fmt.Errorf("parse slimprobe crr output: mode %q, %d connections in %gs (first error: %s)",
			r.Mode, r.Connections, r.Seconds, r.FirstError)
	}
	return r, nil
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

// ParseMemcached reads slimprobe memcached's JSON report. A report whose
// connections failed is returned with an error: its figures cover only
// part of the time.
func ParseMemcached(b []byte) (wire.MemcachedResult, error) {
	var r wire.MemcachedResult
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("parse slimprobe memcached output %q: %w", trim(strings.TrimSpace(string(b)), 80), err)
	}
	if r.Mode != "memcached" || r.Ops <= 0 || r.Seconds <= 0 {
		return r, fmt.Errorf("parse slimprobe memcached output: mode %q, %d operations in %gs (first error: %s)",
			r.Mode, r.Ops, r.Seconds, r.FirstError)
	}
	if r.Errors > 0 {
		return r, fmt.Errorf("slimprobe memcached: %d of %d connections failed (first: %s)", r.Errors, r.Conns, r.FirstError)
	}
	return r, nil
}

// trim shortens s to n bytes for an error message.
func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
