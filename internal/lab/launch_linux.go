package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/slimnet/slim/internal/seccomp"
	"golang.org/x/sys/unix"
)

// Launch is the launcher. On the calling goroutine's OS thread, locked and
// never unlocked, it enters spec.Netns, moves the process into spec.Cgroup,
// redirects stdio to spec.Log if set, and execs spec.Command. It returns
// only on failure, having reported it on spec.StatusFD too. Call it from a
// process that does nothing else (slimctl lab nsexec, slimctl lab exec).
//
// setns is per thread (so are no_new_privs and the seccomp filter that will
// be installed here before the exec): everything happens on one thread and
// the exec follows on that same thread, so the command starts in the
// namespace. `ip netns exec` is not used because it also enters a new mount
// namespace and remounts /sys, and slimd needs the real /sys/fs/cgroup.
func Launch(spec LaunchSpec) (err error) {
	defer func() {
		if err != nil && spec.StatusFD > 0 {
			reportStatus(spec.StatusFD, err)
		}
	}()
	if err := spec.validate(); err != nil {
		return err
	}
	runtime.LockOSThread()
	path, err := exec.LookPath(spec.Command[0])
	if err != nil {
		return fmt.Errorf("launcher: %w", err)
	}
	if err := enterNetns(spec.Netns); err != nil {
		return err
	}
	if err := joinCgroup(spec.Cgroup); err != nil {
		return fmt.Errorf("launcher: %w", err)
	}
	if spec.Log != "" {
		if err := redirectStdio(spec.Log); err != nil {
			return err
		}
	}
	if spec.Agent != "" {
		if err := superviseBySlim(spec.Agent); err != nil {
			return err
		}
	}
	// The status fd must not survive the exec: its closing is what tells
	// the starter that the exec happened.
	if spec.StatusFD > 0 {
		unix.CloseOnExec(spec.StatusFD)
	}
	err = unix.Exec(path, spec.Command, os.Environ())
	return fmt.Errorf("launcher: exec %s: %w", path, err)
}

// enterNetns switches the calling thread into the namespace at path.
func enterNetns(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("launcher: open netns %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("launcher: setns %s: %w", path, err)
	}
	return nil
}

// redirectStdio points stdout and stderr at log (appending) and stdin at
// /dev/null.
func redirectStdio(log string) error {
	out, err := unix.Open(log, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("launcher: open log: %w", err)
	}
	defer unix.Close(out)
	in, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("launcher: %w", err)
	}
	defer unix.Close(in)
	for _, d := range [][2]int{{in, 0}, {out, 1}, {out, 2}} {
		if err := unix.Dup3(d[0], d[1], 0); err != nil {
			return fmt.Errorf("launcher: redirect fd %d: %w", d[1], err)
		}
	}
	return nil
}

func reportStatus(fd int, err error) {
	f := os.NewFile(uintptr(fd), "status")
	if f == nil {
		return
	}
	f.WriteString(err.Error())
	f.Close()
}

// statusFD is the fd number the launcher's status pipe gets in the child:
// the first of os/exec's ExtraFiles.
const statusFD = 3

// Detach runs the launcher (launcher is the slimctl binary) for spec as a
// background process: a new session, stdin /dev/null, stdout and stderr to
// spec.Log. It waits until the launcher has exec'd the command, or reports
// why it could not, and returns the command's pid. The caller may exit
// right away; the command is then init's child, and nobody needs to reap
// it. `slimctl lab nsexec --detach` runs this, so that a long-lived caller
// (a test binary) never collects zombies.
func Detach(launcher string, spec LaunchSpec) (int, error) {
	if err := spec.validate(); err != nil {
		return 0, err
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	out := devnull
	if spec.Log != "" {
		out, err = os.OpenFile(spec.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return 0, fmt.Errorf("open log: %w", err)
		}
		defer out.Close()
	}
	child := spec
	child.Log = ""
	child.StatusFD = statusFD
	cmd := exec.Command(launcher, LauncherCommand(child, false)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	msg, err := startWithStatus(cmd)
	if err != nil {
		return 0, err
	}
	if msg != "" {
		cmd.Wait()
		return 0, errors.New(msg)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	return pid, nil
}

// startWithStatus starts cmd, a launcher told to report on statusFD, and
// waits until it has exec'd its command (EOF, "") or failed (its message).
func startWithStatus(cmd *exec.Cmd) (string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer r.Close()
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return "", fmt.Errorf("start launcher: %w", err)
	}
	// Bounded by the launcher: it writes and exits, or execs.
	b, err := io.ReadAll(r)
	if err != nil {
		return "", fmt.Errorf("read launcher status: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// startDetached starts spec.Command in the background through the
// launcher and returns its pid.
func startDetached(ctx context.Context, launcher string, spec LaunchSpec) (int, error) {
	cmd := exec.CommandContext(ctx, launcher, LauncherCommand(spec, true)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, launcherError(stderr.String(), err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("launcher printed %q, want a pid", out)
	}
	return pid, nil
}

// launcherError turns what a failed launcher printed into an error: the
// text without slimctl's prefix, or err if it printed nothing.
func launcherError(stderr string, err error) error {
	msg := strings.TrimSpace(stderr)
	msg = strings.TrimPrefix(msg, "slimctl: ")
	if msg == "" {
		return fmt.Errorf("launcher: %w", err)
	}
	return errors.New(msg)
}

// runForeground runs spec.Command through the launcher with the given
// stdio and returns its exit code. Failures of the launcher itself (no
// such namespace, command not found) are errors, not exit codes.
func runForeground(ctx context.Context, launcher string, spec LaunchSpec, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	spec.StatusFD = statusFD
	cmd := exec.CommandContext(ctx, launcher, LauncherCommand(spec, false)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	msg, err := startWithStatus(cmd)
	if err != nil {
		return -1, err
	}
	werr := cmd.Wait()
	if msg != "" {
		return -1, errors.New(msg)
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		return ee.ExitCode(), nil
	}
	if werr != nil {
		return -1, werr
	}
	return 0, nil
}

// superviseBySlim installs Slim's seccomp filter on this thread (which then
// execs) and hands the notification fd to slimd's agent socket. The
// connection to the agent is made before the filter exists: afterwards
// this thread's own connect would trap into a supervisor that does not
// have the fd yet.
func superviseBySlim(agent string) error {
	ac, err := seccomp.DialAgent(agent)
	if err != nil {
		return fmt.Errorf("launcher: %w", err)
	}
	fd, _, err := seccomp.Install()
	if err != nil {
		ac.Close()
		return fmt.Errorf("launcher: install seccomp filter: %w", err)
	}
	// Our copy of the fd must not reach the command: a process holding
	// its own notification fd could answer its own traps.
	defer unix.Close(fd)
	st := specs.ContainerProcessState{Version: specs.Version, Pid: os.Getpid(), Metadata: "slimctl lab"}
	if err := ac.Send(st, fd); err != nil {
		return fmt.Errorf("launcher: hand notification fd to slimd: %w", err)
	}
	return nil
}
