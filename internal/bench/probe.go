package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

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
func probeCPU(start, end string) (time.Duration, error) {
	a, err := ParseCPULine(start)
	if err != nil {
		return 0, err
	}
	b, err := ParseCPULine(end)
	if err != nil {
		return 0, err
	}
	return b.BusySince(a), nil
}

// IfaceCounters are an interface's byte and packet counters.
type IfaceCounters struct {
	RxBytes, RxPackets, TxBytes, TxPackets uint64
}

// Bytes is received plus sent bytes.
func (c IfaceCounters) Bytes() uint64 { return c.RxBytes + c.TxBytes }

// ErrNoIface means the interface is not in the listing.
var ErrNoIface = errors.New("no such interface")

// ParseNetDev finds iface in a /proc/net/dev listing:
//
//	Inter-|   Receive                                                |  Transmit
//	 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets ...
//	    lo:    1234      10    0    0    0     0          0         0     1234      10 ...
func ParseNetDev(r io.Reader, iface string) (IfaceCounters, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(name) != iface {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 10 {
			return IfaceCounters{}, fmt.Errorf("parse net/dev: %s: %d fields, want 16", iface, len(f))
		}
		var v [4]uint64
		for i, k := range []int{0, 1, 8, 9} {
			n, err := strconv.ParseUint(f[k], 10, 64)
			if err != nil {
				return IfaceCounters{}, fmt.Errorf("parse net/dev: %s: %w", iface, err)
			}
			v[i] = n
		}
		return IfaceCounters{RxBytes: v[0], RxPackets: v[1], TxBytes: v[2], TxPackets: v[3]}, nil
	}
	if err := sc.Err(); err != nil {
		return IfaceCounters{}, fmt.Errorf("read net/dev: %w", err)
	}
	return IfaceCounters{}, fmt.Errorf("%s: %w", iface, ErrNoIface)
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
