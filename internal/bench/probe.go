package bench

import (
	"encoding/json"
	"fmt"
	"strings"

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
