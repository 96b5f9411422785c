package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/slimnet/slim/internal/atomicfile"
	"github.com/slimnet/slim/internal/seccomp"
	"github.com/spf13/cobra"
)

// nodeInstall is what install-node puts on a node.
type nodeInstall struct {
	cniBin, cniBinDir    string // the plugin binary, and where the runtime looks for plugins
	conflist, cniConfDir string
	profile, seccompDir  string // the profile file to install ("": generate), and the kubelet's directory
	agent                string
}

func newInstallNodeCmd(g *globals) *cobra.Command {
	in := nodeInstall{}
	cmd := &cobra.Command{
		Use:   "install-node",
		Short: "Install slim-cni, its network configuration and the seccomp profile on a node",
		Long: `Install what a node's container runtime and kubelet need to run pods on
Slim, each file written whole (through a rename) so a runtime never reads
half of one:

  the slim-cni binary            into --cni-bin-dir
  the network configuration list into --cni-conf-dir (checked first)
  the seccomp profile            into --seccomp-dir, as ` + seccomp.ProfileName() + `

The profile is generated, or with --seccomp-profile taken from a file (the
DaemonSet's ConfigMap) that must equal the generated one: a profile from
another version of Slim is refused, not installed. Profiles of earlier
versions stay, for the pods that started with them. The DaemonSet's init
container runs this (deploy/kubernetes).`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			done, err := in.run()
			if err != nil {
				return err
			}
			if !g.quiet {
				for _, p := range done {
					fmt.Fprintln(g.stderr, "installed", p)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in.cniBin, "cni-bin", "", "the slim-cni binary to install (default: slim-cni beside slimctl)")
	f.StringVar(&in.cniBinDir, "cni-bin-dir", "/opt/cni/bin", "the runtime's CNI plugin directory")
	f.StringVar(&in.conflist, "conflist", "", "the CNI network configuration list to install (required)")
	f.StringVar(&in.cniConfDir, "cni-conf-dir", "/etc/cni/net.d", "the runtime's CNI configuration directory")
	f.StringVar(&in.profile, "seccomp-profile", "", "the seccomp profile to install; it must equal the generated one (default: generate it)")
	f.StringVar(&in.seccompDir, "seccomp-dir", "/var/lib/kubelet/seccomp/slim", "where the kubelet finds Localhost profiles (pods name slim/"+seccomp.ProfileName()+")")
	f.StringVar(&in.agent, "agent-socket", "/run/slim/agent.sock", "slimd's agent socket, as slimd --agent-socket (the profile's listenerPath)")
	return cmd
}

// run checks every input first, then writes the files; it returns their
// paths.
func (in nodeInstall) run() ([]string, error) {
	if in.conflist == "" {
		return nil, &usageError{fmt.Errorf("install-node: --conflist is required")}
	}
	if in.cniBin == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		in.cniBin = filepath.Join(filepath.Dir(self), "slim-cni")
	}
	bin, err := os.ReadFile(in.cniBin)
	if err != nil {
		return nil, fmt.Errorf("install-node: the plugin: %w", err)
	}
	conf, err := os.ReadFile(in.conflist)
	if err != nil {
		return nil, fmt.Errorf("install-node: %w", err)
	}
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		return nil, fmt.Errorf("install-node: %s: %w", in.conflist, err)
	}
	if len(list.Plugins) == 0 || list.Plugins[0].Network.Type != "slim-cni" {
		return nil, fmt.Errorf("install-node: %s: the first plugin must be slim-cni", in.conflist)
	}
	p, err := seccomp.Profile(in.agent)
	if err != nil {
		return nil, &usageError{err}
	}
	profile, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, err
	}
	profile = append(profile, '\n')
	if in.profile != "" {
		given, err := os.ReadFile(in.profile)
		if err != nil {
			return nil, fmt.Errorf("install-node: %w", err)
		}
		if !bytes.Equal(bytes.TrimSpace(given), bytes.TrimSpace(profile)) {
			return nil, fmt.Errorf("install-node: %s is not this version's seccomp profile (%s for agent socket %s): regenerate it with slimctl seccomp-profile",
				in.profile, seccomp.ProfileName(), in.agent)
		}
	}
	files := []struct {
		dir, name string
		data      []byte
		mode      os.FileMode
	}{
		{in.cniBinDir, "slim-cni", bin, 0o755},
		{in.seccompDir, seccomp.ProfileName(), profile, 0o644},
		// Last: a runtime takes the node's network as ready once a
		// configuration is there, and the plugin must be there by then.
		{in.cniConfDir, "10-slim.conflist", conf, 0o644},
	}
	var done []string
	for _, f := range files {
		if err := os.MkdirAll(f.dir, 0o755); err != nil {
			return done, fmt.Errorf("install-node: %w", err)
		}
		path := filepath.Join(f.dir, f.name)
		if err := atomicfile.Write(path, f.data, f.mode); err != nil {
			return done, fmt.Errorf("install-node: %w", err)
		}
		done = append(done, path)
	}
	return done, nil
}
