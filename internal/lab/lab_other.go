//go:build !linux

package lab

import (
	"context"
	"path/filepath"
)

// NetnsDir is where named network namespaces live on Linux.
const NetnsDir = "/run/netns"

// NetnsPath is the path of the named namespace name.
func NetnsPath(name string) string { return filepath.Join(NetnsDir, name) }

// Up needs Linux.
func Up(context.Context, Config) error { return ErrNotSupported }

// Down needs Linux.
func Down(context.Context, Config) error { return ErrNotSupported }

// Run needs Linux.
func Run(context.Context, Config, RunSpec) (Container, error) { return Container{}, ErrNotSupported }

// Remove needs Linux.
func Remove(context.Context, Config, string) error { return ErrNotSupported }

// Exec needs Linux.
func Exec(context.Context, Config, string, ExecSpec) (int, error) { return -1, ErrNotSupported }

// Output needs Linux.
func Output(context.Context, Config, string, ...string) ([]byte, error) { return nil, ErrNotSupported }

// List needs Linux.
func List(context.Context, Config) (Listing, error) { return Listing{}, ErrNotSupported }

// ExecLaunchSpec needs Linux.
func ExecLaunchSpec(Config, string, []string) (LaunchSpec, error) {
	return LaunchSpec{}, ErrNotSupported
}

// Launch needs Linux.
func Launch(LaunchSpec) error { return ErrNotSupported }

// Detach needs Linux.
func Detach(string, LaunchSpec) (int, error) { return 0, ErrNotSupported }
