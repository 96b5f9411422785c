package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// slimdPID returns the pid of host's slimd if it is running: the pid file
// names a process of slimd's cgroup.
func slimdPID(cgRoot, dir, host string) (int, bool) {
	return pidIn(SlimdCgroup(cgRoot, host), slimdPIDPath(dir, host))
}

// pidIn returns the pid recorded in pidFile if that process is in cgroup
// cg.
func pidIn(cg, pidFile string) (int, bool) {
	pids, err := cgroupPIDs(cg)
	if err != nil || len(pids) == 0 {
		return 0, false
	}
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && slices.Contains(pids, pid) {
			return pid, true
		}
	}
	return 0, false
}

// startSlimd starts host i's slimd in its namespace and cgroup and records
// its pid.
func startSlimd(ctx context.Context, dir, binDir, launcher, cgRoot string, p plan, i int) (int, error) {
	host := HostName(i)
	if err := os.MkdirAll(slimdDataPath(dir, host), 0o700); err != nil {
		return 0, err
	}
	cg := SlimdCgroup(cgRoot, host)
	if err := ensureCgroup(cg); err != nil {
		return 0, err
	}
	args, err := slimdArgs(dir, p, i)
	if err != nil {
		return 0, err
	}
	log := slimdLogPath(dir, host)
	stamp := fmt.Sprintf("--- slimctl lab: starting slimd %s at %s\n", host, time.Now().Format(time.RFC3339))
	if err := appendFile(log, stamp); err != nil {
		return 0, err
	}
	spec := LaunchSpec{
		Netns:   NetnsPath(HostNetns(host)),
		Cgroup:  cg,
		Log:     log,
		Command: append([]string{filepath.Join(binDir, "slimd")}, args...),
	}
	pid, err := startDetached(ctx, launcher, spec)
	if err != nil {
		return 0, fmt.Errorf("start slimd on %s: %w", host, err)
	}
	if err := atomicfile.Write(slimdPIDPath(dir, host), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return pid, err
	}
	return pid, nil
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	return errors.Join(err, f.Close())
}

// statusTimeout bounds one status call while waiting: slimd answers from
// memory, so a slow answer is as good as none.
const statusTimeout = 2 * time.Second

// pollInterval is how often Up asks the slimds whether they are ready.
const pollInterval = 200 * time.Millisecond

// readiness is what waitReady knows about one host.
type readiness struct {
	host    string
	ready   bool
	peers   int
	lastErr error
}

// waitReady polls the hosts' slimds until each one's status satisfies ok,
// a slimd dies, or timeout passes. The error names the first host that is
// not ready and carries the tail of its log.
func waitReady(ctx context.Context, dir, cgRoot string, hosts []string, timeout time.Duration, ok func(api.Status) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st := make([]readiness, len(hosts))
	for i, h := range hosts {
		st[i].host = h
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		all := true
		for i := range st {
			r := &st[i]
			if r.ready {
				continue
			}
			if _, alive := slimdPID(cgRoot, dir, r.host); !alive {
				return fmt.Errorf("slimd on %s exited\n%s", r.host, logTail(slimdLogPath(dir, r.host)))
			}
			sctx, scancel := context.WithTimeout(ctx, statusTimeout)
			s, err := api.NewClient(socketPath(dir, r.host)).Status(sctx)
			scancel()
			r.lastErr = err
			if err == nil {
				r.peers = s.Peers
				r.ready = ok(s)
			}
			all = all && r.ready
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			for _, r := range st {
				if r.ready {
					continue
				}
				why := fmt.Sprintf("%d peers", r.peers)
				if r.lastErr != nil {
					why = r.lastErr.Error()
				}
				return fmt.Errorf("slimd on %s not ready after %s (%s)\n%s", r.host, timeout, why, logTail(slimdLogPath(dir, r.host)))
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// tailLines is how much of a log an error quotes; tailBytes bounds what
// is read to find them (a debug log grows large).
const (
	tailLines = 20
	tailBytes = 16 << 10
)

// readTail reads the last n bytes of a file.
func readTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(fi.Size()-n, 0)
	b := make([]byte, fi.Size()-off)
	k, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:k], nil
}

// logTail returns the last lines of a log, introduced by its path.
func logTail(path string) string {
	b, err := readTail(path, tailBytes)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	b = bytes.TrimRight(b, "\n")
	lines := strings.Split(string(b), "\n")
	if len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	return fmt.Sprintf("last lines of %s:\n  %s", path, strings.Join(lines, "\n  "))
}

// slimdStopTimeout bounds waiting for a signalled slimd to exit; the
// embedded etcd alone may take ~5 s while other hosts hold watches on it.
const slimdStopTimeout = 20 * time.Second

// labHost checks that host is one of the lab's and returns the lab's
// state directory and the cgroup2 mount.
func labHost(cfg Config, host string) (dir, cgRoot string, err error) {
	dir = cfg.stateDir()
	p, err := loadPlan(dir)
	if err != nil {
		return "", "", err
	}
	if _, err := p.hostOf(host); err != nil {
		return "", "", err
	}
	cgRoot, err = cgroupRoot()
	return dir, cgRoot, err
}

// StopSlimd sends sig to host's slimd (its process only: its fd keeper
// stays, as it would when a service manager restarts slimd) and waits until
// it has exited, so that a following Up starts a fresh one. Stopping a
// slimd that is not running succeeds.
func StopSlimd(ctx context.Context, cfg Config, host string, sig unix.Signal) error {
	dir, cgRoot, err := labHost(cfg, host)
	if err != nil {
		return err
	}
	pid, alive := slimdPID(cgRoot, dir, host)
	if !alive {
		return nil
	}
	return stopProcess(ctx, pid, sig, "slimd on "+host)
}

// KillSlimdCgroup kills every process of host's slimd cgroup at once
// (cgroup.kill), as a container runtime stops slimd's container, and
// waits until the cgroup is empty. The fd keeper lives in a cgroup of its
// own (--keeper-cgroup) and stays.
func KillSlimdCgroup(ctx context.Context, cfg Config, host string) error {
	_, cgRoot, err := labHost(cfg, host)
	if err != nil {
		return err
	}
	cg := SlimdCgroup(cgRoot, host)
	if err := os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0); err != nil {
		return fmt.Errorf("kill slimd's cgroup on %s: %w", host, err)
	}
	if !waitEmpty(ctx, []string{cg}, slimdStopTimeout) {
		return fmt.Errorf("slimd's cgroup %s not empty %v after cgroup.kill", cg, slimdStopTimeout)
	}
	return nil
}

// stopProcess signals pid and waits until it has exited.
func stopProcess(ctx context.Context, pid int, sig unix.Signal, what string) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd of %s: %w", what, err)
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %s: %w", what, err)
	}
	ctx, cancel := context.WithTimeout(ctx, slimdStopTimeout)
	defer cancel()
	// A pidfd polls readable when its process exits (zombies included:
	// nothing here reaps it).
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 20)
		if err == nil && n > 0 {
			return nil
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s still running after %s", what, slimdStopTimeout)
		}
	}
}
