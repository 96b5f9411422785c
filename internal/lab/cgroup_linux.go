package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/slimnet/slim/internal/cgroupfs"
	"golang.org/x/sys/unix"
)

// cgroupRoot returns the cgroup2 mount point.
func cgroupRoot() (string, error) { return cgroupfs.Mount() }

// ensureCgroup makes a cgroup (and its parents); an existing one is fine.
// The lab enables no controllers: its cgroups only group processes, so
// that they can be found, signalled, and given to BPF programs.
func ensureCgroup(path string) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("make cgroup: %w", err)
	}
	return nil
}

// joinCgroup moves the calling process into the cgroup at path.
func joinCgroup(path string) error { return cgroupfs.Join(path) }

// cgroupPIDs lists the processes in one cgroup, not in its children.
func cgroupPIDs(path string) ([]int, error) { return cgroupfs.PIDs(path) }

// cgroupTree returns path and every cgroup below it, deepest first, which
// is the order they can be removed in. A missing path gives nothing.
func cgroupTree(path string) ([]string, error) {
	var dirs []string
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(dirs, func(a, b string) int {
		return strings.Count(b, "/") - strings.Count(a, "/")
	})
	return dirs, nil
}

// signalCgroup sends sig to every process in the cgroup at path. Each pid
// is pinned with a pidfd and then checked to still be in the cgroup, so a
// pid reused by some other process between the read and the kill is never
// signalled.
func signalCgroup(path string, sig unix.Signal) error {
	pids, err := cgroupPIDs(path)
	if err != nil {
		return err
	}
	var errs []error
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue // already gone
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("pidfd_open %d: %w", pid, err))
			continue
		}
		now, err := cgroupPIDs(path)
		if err == nil && slices.Contains(now, pid) {
			err = unix.PidfdSendSignal(fd, sig, nil, 0)
			if errors.Is(err, unix.ESRCH) {
				err = nil
			}
		}
		unix.Close(fd)
		if err != nil {
			errs = append(errs, fmt.Errorf("signal %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// cgroupsEmpty reports whether none of the cgroups holds a process.
func cgroupsEmpty(cgs []string) bool {
	for _, cg := range cgs {
		if pids, err := cgroupPIDs(cg); err != nil || len(pids) > 0 {
			return false
		}
	}
	return true
}

// cgroupPollInterval is how often a stop checks whether the processes are
// gone: fast enough not to add noticeable latency to lab down.
const cgroupPollInterval = 50 * time.Millisecond

// killWait bounds the wait for SIGKILLed processes to leave their cgroup;
// they cannot refuse, so only a process stuck in the kernel (D state)
// takes longer.
const killWait = 5 * time.Second

// stopCgroups stops every process in cgs: SIGTERM, up to grace for them to
// exit, then SIGKILL. It returns an error if processes remain.
func stopCgroups(ctx context.Context, cgs []string, grace time.Duration) error {
	if cgroupsEmpty(cgs) {
		return nil
	}
	var errs []error
	for _, cg := range cgs {
		errs = append(errs, signalCgroup(cg, unix.SIGTERM))
	}
	// Done waiting once only processes that ignore SIGTERM on purpose
	// (slimd's fd keeper) are left: they get the SIGKILL below at once.
	if waitOnly(ctx, cgs, grace, isKeeper) {
		return errors.Join(errs...)
	}
	for _, cg := range cgs {
		errs = append(errs, signalCgroup(cg, unix.SIGKILL))
	}
	if !waitEmpty(ctx, cgs, killWait) {
		var left []string
		for _, cg := range cgs {
			if pids, _ := cgroupPIDs(cg); len(pids) > 0 {
				left = append(left, fmt.Sprintf("%s %v", cg, pids))
			}
		}
		errs = append(errs, fmt.Errorf("processes survive SIGKILL: %s", strings.Join(left, ", ")))
	}
	return errors.Join(errs...)
}

// waitOnly polls until every process left in the cgroups satisfies keep
// (true if none is left), d passes or ctx ends. It reports whether the
// cgroups are empty.
func waitOnly(ctx context.Context, cgs []string, d time.Duration, keep func(pid int) bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(cgroupPollInterval)
	defer tick.Stop()
	for {
		left, other := 0, false
		for _, cg := range cgs {
			pids, _ := cgroupPIDs(cg)
			left += len(pids)
			for _, p := range pids {
				if !keep(p) {
					other = true
				}
			}
		}
		if left == 0 {
			return true
		}
		if !other {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
}

// waitEmpty polls until the cgroups are empty, d passes or ctx ends.
func waitEmpty(ctx context.Context, cgs []string, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(cgroupPollInterval)
	defer tick.Stop()
	for {
		if cgroupsEmpty(cgs) {
			return true
		}
		select {
		case <-ctx.Done():
			return cgroupsEmpty(cgs)
		case <-deadline.C:
			return cgroupsEmpty(cgs)
		case <-tick.C:
		}
	}
}

// removeCgroupTree removes path and every cgroup below it, deepest first.
// The cgroups must be empty; already removed ones are fine.
func removeCgroupTree(path string) error {
	dirs, err := cgroupTree(path)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		// EBUSY for a moment after the last process left cgroup.procs:
		// the threads of a killed multi-threaded process (a Go program)
		// are still exiting after its leader is gone from the list.
		err := unix.Rmdir(d)
		for deadline := time.Now().Add(rmdirBusyWait); errors.Is(err, unix.EBUSY) && time.Now().Before(deadline); {
			time.Sleep(cgroupPollInterval)
			err = unix.Rmdir(d)
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// rmdirBusyWait bounds waiting for exiting threads to leave a cgroup.
const rmdirBusyWait = 3 * time.Second
