// Command slimctl is the Slim operator CLI: cluster status, hosts,
// endpoints, and the multi-host lab.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// Exit codes, listed in the help text.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitProblem = 3
)

// exitError carries a specific exit code (a child's, or check's 3).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageError marks bad command lines (exit 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "slimctl: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "slimctl: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		return exitUsage
	}
	return exitFailed
}

// globals are the persistent flags every noun sees.
type globals struct {
	socket string
	output string
	quiet  bool
	stdout io.Writer
	stderr io.Writer
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "slimctl",
		Short: "Operate a Slim container network",
		Long: `slimctl operates a Slim container network: it reads the local slimd's
status, lists hosts and endpoints, and builds a multi-host lab.

Exit codes: 0 ok, 1 failed, 2 usage, 3 check found a problem.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.socket, "socket", "/run/slim/slimd.sock", "slimd API socket")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	pf.BoolVarP(&g.quiet, "quiet", "q", false, "no progress output on stderr")
	root.AddCommand(newStatusCmd(g), newHostsCmd(g), newEndpointsCmd(g), newConnectionsCmd(g), newFastPathCmd(g), newCheckCmd(g), newPolicyCmd(g), newNamespaceCmd(g), newServiceCmd(g), newLabCmd(g), newBenchCmd(g), newSeccompProfileCmd(g), newInstallNodeCmd(g))
	return root
}

func isCobraUsage(err error) bool {
	// cobra reports unknown commands, missing required flags and
	// flag-group conflicts this way; flag and argument errors are
	// already usageErrors.
	for _, p := range []string{"unknown command", "required flag(s)", "if any flags in the group"} {
		if strings.HasPrefix(err.Error(), p) {
			return true
		}
	}
	return false
}

// usageArgs wraps a cobra argument validator so its errors exit 2.
func usageArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return &usageError{err}
		}
		return nil
	}
}
