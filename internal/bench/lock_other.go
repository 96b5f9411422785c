//go:build !linux

package bench

import "context"

// LockPath is the machine-wide lab lock (see the Linux version).
const LockPath = "/run/slimlab.lock"

// Lock needs Linux, as the lab does.
func Lock(context.Context, func()) (func(), error) { return nil, ErrNotSupported }
