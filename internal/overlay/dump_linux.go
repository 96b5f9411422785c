package overlay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
)

const (
	// dumpTries bounds how often a netlink dump is repeated when the kernel
	// flags it as interrupted (the table changed while it was being read).
	// A busy table settles within a few tries; more means something is
	// rewriting it in a loop, and the caller's own retry is the better place
	// to wait.
	dumpTries = 5
	// dumpRetryPause is the pause between interrupted dumps, long enough to
	// let a burst of changes finish.
	dumpRetryPause = 10 * time.Millisecond
)

// dump runs a netlink dump and repeats it, bounded, while the kernel reports
// it as interrupted (netlink.ErrDumpInterrupted: the results may be
// inconsistent). Every dump in this package goes through it.
func dump[T any](ctx context.Context, what string, list func() ([]T, error)) ([]T, error) {
	for try := 1; ; try++ {
		res, err := list()
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("dump %s: %w", what, err)
		}
		if try == dumpTries {
			return nil, fmt.Errorf("dump %s: %w (%d tries)", what, err, dumpTries)
		}
		t := time.NewTimer(dumpRetryPause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}
