// Package testenv holds what the project's tests share about their
// environment: whether kernel tests may run, the machine-wide lock of
// tests that change the machine, and a logger into the test's output.
package testenv

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireRoot skips a kernel test without root, except under CI (CI set),
// which runs as root: there a missing root fails the test, so a CI run
// never passes by skipping the kernel tests.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("kernel test needs root, and CI is set: CI runs as root")
	}
	t.Skip("kernel test needs root")
}

// Logger logs at debug level into t's output (shown for failed tests and
// with -v).
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// MachineLock is the machine-wide lock of tests that change what other
// tests share: the lab (its namespace names are fixed) and machine-wide
// kernel settings.
const MachineLock = "/run/slimlab.lock"

// lockTimeout bounds the wait for the lock: a lab test holds it for
// minutes.
const lockTimeout = 20 * time.Minute

// procMu serializes holders within this test binary; the flock on
// MachineLock serializes test binaries.
var procMu sync.Mutex

// LockMachine takes MachineLock for the rest of t.
func LockMachine(t testing.TB) {
	t.Helper()
	procMu.Lock()
	f, err := os.OpenFile(MachineLock, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		procMu.Unlock()
		t.Fatal(err)
	}
	deadline := time.Now().Add(lockTimeout)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			procMu.Unlock()
			t.Fatalf("machine lock %s: %v", MachineLock, err)
		}
		time.Sleep(100 * time.Millisecond) // another package's test holds it
	}
	t.Cleanup(func() {
		f.Close() // closing releases the flock
		procMu.Unlock()
	})
}
