package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/lab"
)

// labFlags are the flags every lab command shares.
type labFlags struct {
	stateDir string
	binDir   string
}

// config is the lab.Config the flags describe. slimctl itself is the
// launcher; progress goes to stderr unless -q.
func (lf *labFlags) config(g *globals) (lab.Config, error) {
	exe, err := os.Executable()
	if err != nil {
		return lab.Config{}, err
	}
	cfg := lab.Config{StateDir: lf.stateDir, BinDir: lf.binDir, Launcher: exe}
	if !g.quiet {
		cfg.Progress = g.stderr
	}
	return cfg, nil
}

func newLabCmd(g *globals) *cobra.Command {
	lf := &labFlags{}
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Build a multi-host lab of network namespaces and run containers in it",
		Long: `The lab turns this machine into several Slim hosts: each host is a network
namespace (slimlab-h1, slimlab-h2, ...) on a shared bridge (in namespace
slimlab-wire, underlay 192.168.77.0/24), running its own slimd; h1's slimd
embeds the etcd the others join. Containers are namespaces plus a cgroup,
attached to their host by slim-cni. The machine's own namespace is not
touched. Only one lab can exist at a time. Needs root.

slimd and slim-cni are taken from --bin-dir, by default the directory of this
slimctl binary.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&lf.stateDir, "state-dir", lab.DefaultStateDir, "directory of the lab's state, logs and etcd data")
	pf.StringVar(&lf.binDir, "bin-dir", "", "directory holding slimd and slim-cni (default: slimctl's own)")
	cmd.AddCommand(newLabUpCmd(g, lf), newLabDownCmd(g, lf), newLabRunCmd(g, lf), newLabExecCmd(g, lf),
		newLabLsCmd(g, lf), newLabLabelCmd(g, lf), newLabRmCmd(g, lf), newLabNsexecCmd())
	return cmd
}

func newLabUpCmd(g *globals, lf *labFlags) *cobra.Command {
	var (
		hosts       int
		ipv6        bool
		tls         bool
		etcdMembers int
		clusterCIDR string
		blockSize   int
		memLimit    string
		leaseTTL    time.Duration
		underlay    string
		mtu         int
		timeout     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build the lab and start a slimd on every host",
		Long: `Build the lab and start a slimd on every host; return when every host sees
all the others. Running it again is harmless: what exists and runs is kept, a
dead slimd is restarted.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := lf.config(g)
			if err != nil {
				return err
			}
			u, err := netip.ParsePrefix(underlay)
			if err != nil {
				return &usageError{fmt.Errorf("--underlay: %w", err)}
			}
			cfg.EtcdMembers, cfg.PortBlockSize, cfg.SlimdMemoryLimit = etcdMembers, blockSize, memLimit
			if clusterCIDR != "" {
				if cfg.ClusterCIDR, err = netip.ParsePrefix(clusterCIDR); err != nil {
					return &usageError{fmt.Errorf("--cluster-cidr: %w", err)}
				}
			}
			cfg.Hosts, cfg.IPv6, cfg.TLS, cfg.LeaseTTL, cfg.Underlay, cfg.MTU, cfg.ReadyTimeout = hosts, ipv6, tls, leaseTTL, u, mtu, timeout
			return lab.Up(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.IntVar(&hosts, "hosts", 2, fmt.Sprintf("number of hosts (1-%d)", lab.MaxHosts))
	f.BoolVar(&ipv6, "ipv6", false, "give containers IPv6 addresses too (cluster "+lab.ClusterCIDR6+")")
	f.BoolVar(&tls, "tls", false, "run the store with mutual TLS and etcd role-based access (a throwaway CA in the state dir)")
	f.DurationVar(&leaseTTL, "lease-ttl", lab.DefaultLeaseTTL, "slimd's host lease TTL")
	f.StringVar(&underlay, "underlay", lab.DefaultUnderlay.String(), "the wire's IPv4 subnet; host i gets its address .i")
	f.IntVar(&mtu, "mtu", lab.DefaultMTU, "the wire's MTU")
	f.StringVar(&clusterCIDR, "cluster-cidr", "", "IPv4 cluster range (default: slimd's)")
	f.IntVar(&blockSize, "port-block-size", 0, "slimd's source port block size (default: slimd's)")
	f.StringVar(&memLimit, "slimd-memory-limit", "", "slimd's --memory-limit, a soft limit on its memory (e.g. 180Mi; default none)")
	f.IntVar(&etcdMembers, "etcd-members", 0, fmt.Sprintf("run the store as an etcd cluster of this many members (1-%d) on machines of their own; 0: h1's embedded etcd", lab.MaxEtcdMembers))
	f.DurationVar(&timeout, "timeout", lab.DefaultReadyTimeout, "how long to wait for the hosts to see each other")
	return cmd
}

func newLabDownCmd(g *globals, lf *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Remove everything the lab made",
		Long: `Remove everything the lab made: containers, processes, cgroups, every
slimlab-* namespace and the state directory. It finds them by name, so it
also cleans up after a crash; running it twice is harmless.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := lf.config(g)
			if err != nil {
				return err
			}
			return lab.Down(cmd.Context(), cfg)
		},
	}
}

// dashArgs checks a command line of the form `ARG... -- CMD [ARGS...]`
// with exactly n arguments before the "--".
func dashArgs(n int, want string) cobra.PositionalArgs {
	return usageArgs(func(cmd *cobra.Command, args []string) error {
		if cmd.ArgsLenAtDash() != n || len(args) <= n {
			return fmt.Errorf("want %s", want)
		}
		return nil
	})
}

func newLabRunCmd(g *globals, lf *labFlags) *cobra.Command {
	var (
		labels    []string
		ports     []string
		namespace string
		noSlim    bool
	)
	cmd := &cobra.Command{
		Use:   "run HOST NAME [--namespace NS] [--label k=v]... [--port NAME=PORT[/PROTO]]... [--no-slim] -- CMD [ARGS...]",
		Short: "Start a command as a container on a lab host; print its IPv4 address",
		Long: `Start CMD in the background as container NAME on lab host HOST (h1, h2, ...):
a new network namespace (slimlab-c-NAME) attached by slim-cni, and a cgroup.
Its output goes to <state-dir>/containers/NAME.log. Prints the container's
IPv4 address. --namespace and --label are what network policies select
on (the namespace travels as a Kubernetes runtime passes it, in CNI_ARGS);
--port names a port for policies that name ports.`,
		Args: dashArgs(2, "HOST NAME -- CMD [ARGS...]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := lf.config(g)
			if err != nil {
				return err
			}
			lbl := map[string]string{}
			for _, kv := range labels {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return &usageError{fmt.Errorf("--label %q: want key=value", kv)}
				}
				lbl[k] = v
			}
			var named []api.NamedPort
			for _, p := range ports {
				np, err := api.ParseNamedPort(p)
				if err != nil {
					return &usageError{fmt.Errorf("--port: %w", err)}
				}
				named = append(named, np)
			}
			c, err := lab.Run(cmd.Context(), cfg, lab.RunSpec{
				Host: args[0], Name: args[1], Namespace: namespace, Labels: lbl, Ports: named, NoSlim: noSlim, Command: args[2:],
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, c.IPv4)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	cmd.Flags().StringVar(&namespace, "namespace", "", `namespace for network policies (default "default")`)
	cmd.Flags().StringArrayVar(&ports, "port", nil, "named port NAME=PORT[/PROTO] for network policies (repeatable)")
	cmd.Flags().BoolVar(&noSlim, "no-slim", false, "keep the container off the fast path (overlay only)")
	return cmd
}

func newLabExecCmd(g *globals, lf *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "exec TARGET -- CMD [ARGS...]",
		Short: "Run a command in a container or a host, in the foreground",
		Long: `Run CMD in the foreground inside TARGET, a container or a host (h1, h2, ...),
with stdin, stdout and stderr attached. slimctl becomes CMD, so its exit code
is CMD's.`,
		Args: dashArgs(1, "TARGET -- CMD [ARGS...]"),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := lf.config(g)
			if err != nil {
				return err
			}
			spec, err := lab.ExecLaunchSpec(cfg, args[0], args[1:])
			if err != nil {
				return err
			}
			return lab.Launch(spec) // returns only on failure
		},
	}
}

func newLabLsCmd(g *globals, lf *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the lab's hosts and containers",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.output != "table" && g.output != "json" {
				return &usageError{fmt.Errorf("unknown output format %q: want table or json", g.output)}
			}
			cfg, err := lf.config(g)
			if err != nil {
				return err
			}
			l, err := lab.List(cmd.Context(), cfg)
			if err != nil && !(errors.Is(err, lab.ErrNoLab) && g.output == "json") {
				return err
			}
			if g.output == "json" {
				return l.WriteJSON(g.stdout)
			}
			return l.WriteTable(g.stdout)
		},
	}
}

func newLabLabelCmd(g *globals, lf *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "label NAME KEY=VALUE... KEY-...",
		Short: "Set (KEY=VALUE) or remove (KEY-) labels of a running container, as a pod's labels change",
		Long: `Change the labels of running container NAME, as a pod's labels change in
Kubernetes: its host's slimd updates the endpoint, every host's network
policies follow, and live connections they now deny are cut. The namespace
and pod name labels are the runtime's and cannot change.`,
		Args: usageArgs(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			change, err := parseLabelChange(args[1:])
			if err != nil {
				return &usageError{err}
			}
			cfg, err := lf.config(g)
			if err != nil {
				return err
			}
			c, err := lab.Label(cmd.Context(), cfg, args[0], change)
			if err != nil {
				return err
			}
			return printOut(g, c, func(w io.Writer) { fmt.Fprintf(w, "%s\t%s\n", c.Name, labelString(c.Labels)) })
		},
	}
}

func newLabRmCmd(g *globals, lf *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Stop and remove a container",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := lf.config(g)
			if err != nil {
				return err
			}
			return lab.Remove(cmd.Context(), cfg, args[0])
		},
	}
}

// newLabNsexecCmd is the launcher (see lab.Launch and lab.LauncherCommand,
// whose command line it must accept). Hidden: only the lab runs it.
func newLabNsexecCmd() *cobra.Command {
	var (
		spec   lab.LaunchSpec
		detach bool
	)
	cmd := &cobra.Command{
		Use:    "nsexec --netns PATH --cgroup DIR [--log FILE] [--status-fd N] [--detach] -- CMD [ARGS...]",
		Short:  "Run a command in a network namespace and cgroup (the lab's launcher)",
		Hidden: true,
		Args:   dashArgs(0, "-- CMD [ARGS...]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec.Command = args
			if !detach {
				return lab.Launch(spec) // returns only on failure
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			pid, err := lab.Detach(exe, spec)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), pid)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Netns, "netns", "", "network namespace path to enter")
	f.StringVar(&spec.Cgroup, "cgroup", "", "cgroup v2 directory to join")
	f.StringVar(&spec.Log, "log", "", "append stdout and stderr to this file; stdin from /dev/null")
	f.IntVar(&spec.StatusFD, "status-fd", 0, "report a failure before exec on this fd")
	f.BoolVar(&detach, "detach", false, "run in the background in a new session and print its pid")
	f.StringVar(&spec.Agent, "agent", "", "run under Slim's seccomp filter, handing the notification fd to this agent socket")
	return cmd
}
