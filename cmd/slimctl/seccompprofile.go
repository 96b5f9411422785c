package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/slimnet/slim/internal/atomicfile"
	"github.com/slimnet/slim/internal/seccomp"
	"github.com/spf13/cobra"
)

func newSeccompProfileCmd(g *globals) *cobra.Command {
	var agent, install string
	cmd := &cobra.Command{
		Use:   "seccomp-profile",
		Short: "Write the seccomp profile that puts a container on the fast path",
		Long: `Write the OCI seccomp profile a container runtime installs to give a
container Slim's filter: the runtime's default allowlist, with connect,
bind, listen and TCP Fast Open sends sent to slimd's agent socket
(listenerPath) and io_uring refused.

Kubernetes pods use it as a Localhost profile, a file under the kubelet's
seccomp directory: --install /var/lib/kubelet/seccomp/slim writes it there
as ` + seccomp.ProfileName() + `, and a pod asks for it with
  securityContext.seccompProfile: {type: Localhost, localhostProfile: slim/` + seccomp.ProfileName() + `}
The name carries the profile's version: an upgrade adds a file and leaves
the one running pods started with. Without --install the profile is
printed.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := seccomp.Profile(agent)
			if err != nil {
				return &usageError{err}
			}
			b, err := json.MarshalIndent(p, "", "  ")
			if err != nil {
				return err
			}
			b = append(b, '\n')
			if install == "" {
				_, err := g.stdout.Write(b)
				return err
			}
			if err := os.MkdirAll(install, 0o755); err != nil {
				return err
			}
			path := filepath.Join(install, seccomp.ProfileName())
			if err := atomicfile.Write(path, b, 0o644); err != nil {
				return err
			}
			if !g.quiet {
				fmt.Fprintln(g.stderr, "wrote", path)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&agent, "agent-socket", "/run/slim/agent.sock", "slimd's agent socket, as slimd --agent-socket (the profile's listenerPath)")
	f.StringVar(&install, "install", "", "write the profile into this directory (e.g. /var/lib/kubelet/seccomp/slim) instead of printing it")
	return cmd
}
