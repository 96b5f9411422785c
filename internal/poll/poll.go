// Package poll is how the project's tests wait for something another
// process, a goroutine or the kernel does: they poll a condition until it
// holds or a deadline passes, and never sleep a fixed time. (Production
// code waits on what it can watch: store.Cache.WaitRev, channels.)
package poll

import (
	"testing"
	"time"
)

// Intervals between checks: short at first (most conditions hold within
// milliseconds), then at most maxInterval, so a slow condition on a busy
// machine costs little CPU.
const (
	firstInterval = 5 * time.Millisecond
	maxInterval   = 100 * time.Millisecond
)

// Until calls check until it returns nil, and fails t with check's last
// error once timeout has passed.
func Until(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	interval := firstInterval
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", timeout, err)
		}
		time.Sleep(interval)
		interval = min(2*interval, maxInterval)
	}
}
