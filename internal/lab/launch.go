package lab

import (
	"errors"
	"fmt"
	"io"
	"strconv"
)

// LaunchSpec says where the launcher runs a command.
type LaunchSpec struct {
	// Netns is the path of the network namespace to enter.
	Netns string
	// Cgroup is the cgroup v2 directory to join.
	Cgroup string
	// Log, if set, receives the command's stdout and stderr (appended) and
	// its stdin is /dev/null. Otherwise the launcher's stdio is inherited.
	Log string
	// StatusFD, if positive, is an fd inherited from whoever started the
	// launcher: a failure before the exec is written there, and it is
	// closed on exec, so reading it to EOF tells success from failure.
	StatusFD int
	// Command is the command and its arguments; Command[0] is looked up
	// in PATH.
	Command []string
	// Agent, if set, is slimd's seccomp agent socket: the command runs
	// under Slim's seccomp filter, its notification fd handed to slimd.
	Agent string
}

// LauncherCommand is the slimctl command line that runs the launcher; the
// cobra command `slimctl lab nsexec` must accept exactly these flags:
//
//	slimctl lab nsexec --netns PATH --cgroup DIR [--log FILE]
//	    [--status-fd N] [--detach] -- CMD [ARGS...]
//
// With --detach it runs Detach (and prints the pid), otherwise Launch.
func LauncherCommand(spec LaunchSpec, detach bool) []string {
	args := []string{"lab", "nsexec", "--netns", spec.Netns, "--cgroup", spec.Cgroup}
	if spec.Log != "" {
		args = append(args, "--log", spec.Log)
	}
	if spec.StatusFD > 0 {
		args = append(args, "--status-fd", strconv.Itoa(spec.StatusFD))
	}
	if spec.Agent != "" {
		args = append(args, "--agent", spec.Agent)
	}
	if detach {
		args = append(args, "--detach")
	}
	args = append(args, "--")
	return append(args, spec.Command...)
}

func (s LaunchSpec) validate() error {
	switch {
	case s.Netns == "":
		return errors.New("launcher: no netns")
	case s.Cgroup == "":
		return errors.New("launcher: no cgroup")
	case len(s.Command) == 0 || s.Command[0] == "":
		return errors.New("launcher: no command")
	}
	return nil
}

// ExecSpec says what Exec runs in a container, with which stdio.
type ExecSpec struct {
	Command []string
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
}

// ExitError is a command that ran and exited unsuccessfully.
type ExitError struct {
	// Code is the exit status; -1 if a signal killed it.
	Code int
	// Stderr holds the end of its stderr when it was captured.
	Stderr string
}

func (e *ExitError) Error() string {
	s := fmt.Sprintf("exit status %d", e.Code)
	if e.Code < 0 {
		s = "killed by a signal"
	}
	if e.Stderr != "" {
		s += ": " + e.Stderr
	}
	return s
}
