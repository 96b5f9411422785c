package seccomp

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// InstallConfig tunes InstallWith. The zero value is what Install does.
type InstallConfig struct {
	// AllThreads installs the filter on every thread of the process
	// (SECCOMP_FILTER_FLAG_TSYNC), so that threads the Go runtime starts
	// later carry it too. The default is the calling thread only.
	AllThreads bool
	// NoKillableRecv leaves out SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV:
	// only for tests and measurements of the old behaviour.
	NoKillableRecv bool
}

// Install installs Filter(NativeArch()) on the calling thread and returns
// the notification fd (close-on-exec, as the kernel creates it) and whether
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is in effect. It sets
// PR_SET_NO_NEW_PRIVS first, on the calling thread. The caller has locked
// its goroutine to the OS thread and connected to the agent already; a Go
// program then execs on this thread, or does the trapped calls itself on it.
func Install() (fd int, killable bool, err error) {
	return InstallWith(InstallConfig{})
}

// InstallWith is Install with options.
func InstallWith(cfg InstallConfig) (fd int, killable bool, err error) {
	prog, err := Filter(NativeArch())
	if err != nil {
		return -1, false, err
	}
	// no_new_privs is required for an unprivileged caller and harmless for
	// root; it also keeps a setuid exec from shedding the filter's intent.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return -1, false, fmt.Errorf("prctl no_new_privs: %w", err)
	}
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER)
	if cfg.AllThreads {
		// TSYNC's usual failure report is a thread id as the return value,
		// which collides with the listener fd: TSYNC_ESRCH makes it ESRCH.
		flags |= unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if !cfg.NoKillableRecv {
		fd, err := setFilter(flags|unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, &fprog)
		if err == nil {
			return fd, true, nil
		}
		if !errors.Is(err, unix.EINVAL) { // EINVAL: kernel older than 5.19
			return -1, false, err
		}
	}
	fd, err = setFilter(flags, &fprog)
	if err != nil {
		return -1, false, err
	}
	return fd, false, nil
}

func setFilter(flags uintptr, fprog *unix.SockFprog) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(fprog)))
	if e != 0 {
		return -1, fmt.Errorf("seccomp set_mode_filter flags %#x: %w", flags, e)
	}
	return int(r), nil
}
