package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// LockPath is the machine-wide lab lock. It must be labtest.LockPath (a
// test checks): lab tests hold it from before their lab is built until
// after it is gone, and so does slimctl bench, so that neither sweeps the
// other's lab away.
const LockPath = "/run/slimlab.lock"

// lockPoll is how often Lock tries again while someone else holds it.
const lockPoll = 200 * time.Millisecond

// Lock takes the machine-wide lab lock, waiting while another holder has
// it (calling waiting once, first) until ctx ends. unlock releases it.
func Lock(ctx context.Context, waiting func()) (unlock func(), err error) {
	f, err := os.OpenFile(LockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab lock: %w", err)
	}
	told := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the flock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lab lock %s: %w", LockPath, err)
		}
		if !told && waiting != nil {
			waiting()
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lab lock %s: %w", LockPath, ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}
