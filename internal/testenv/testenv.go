// Package testenv holds what the project's tests share about their
// environment: whether kernel tests may run, and a logger into the test's
// output.
package testenv

import (
	"log/slog"
	"os"
	"testing"
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
