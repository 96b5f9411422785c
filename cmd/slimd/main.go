// Command slimd is the per-host Slim agent: store, overlay and local API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/daemon"
	"github.com/slimnet/slim/internal/embedetcd"
	"github.com/slimnet/slim/internal/keeper"
	"github.com/slimnet/slim/internal/store"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "keeper" {
		return runKeeper(args[1:])
	}
	if len(args) > 0 && args[0] == "etcd" {
		return runEtcd(args[1:])
	}
	cfg, err := config(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		if !errors.Is(err, errReported) {
			fmt.Fprintf(os.Stderr, "slimd: %v\n", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, cfg); err != nil {
		cfg.Log.Error("slimd failed", "err", err)
		return 1
	}
	return 0
}

// errReported: the flag package has printed the problem already.
var errReported = errors.New("usage error")

// config turns slimd's command line into its configuration; an error is a
// usage error.
func config(args []string) (daemon.Config, error) {
	fs := flag.NewFlagSet("slimd", flag.ContinueOnError)
	host, _ := os.Hostname()
	cfg := daemon.Config{Version: version}
	var etcdEndpoints, cluster4, cluster6, underlayIP, logLevel, portRange, memLimit string
	var blockSize uint
	fs.StringVar(&cfg.NodeName, "node-name", strings.ToLower(host), "this host's name in the cluster")
	fs.StringVar(&cfg.DataDir, "data-dir", daemon.DefaultDataDir, "state directory (embedded etcd data, lease)")
	fs.StringVar(&cfg.Socket, "socket", api.DefaultSocket, "local API unix socket")
	fs.StringVar(&etcdEndpoints, "etcd-endpoints", "", "comma-separated external etcd endpoints; empty runs an embedded single-node etcd")
	fs.StringVar(&cfg.EtcdListenClient, "etcd-listen-client", daemon.DefaultEtcdClient, "embedded etcd client URL (default "+daemon.DefaultEtcdClientTLS+" with TLS)")
	fs.StringVar(&cfg.EtcdListenPeer, "etcd-listen-peer", daemon.DefaultEtcdPeer, "embedded etcd peer URL (default "+daemon.DefaultEtcdPeerTLS+" with TLS)")
	fs.StringVar(&cfg.EtcdTLS.TrustedCAFile, "etcd-cacert", "", "CA bundle that signed etcd's certificates (and, for the embedded etcd, the clients')")
	fs.StringVar(&cfg.EtcdTLS.CertFile, "etcd-cert", "", "slimd's client certificate for etcd (also the embedded etcd's server certificate)")
	fs.StringVar(&cfg.EtcdTLS.KeyFile, "etcd-key", "", "the key of --etcd-cert")
	fs.StringVar(&cfg.Prefix, "etcd-prefix", store.DefaultPrefix, "key prefix in etcd")
	fs.StringVar(&cluster4, "cluster-cidr", daemon.DefaultCluster4, "IPv4 cluster CIDR")
	fs.TextVar(&cfg.ServiceCIDR, "service-cidr", netip.MustParsePrefix(daemon.DefaultServiceCIDR), "IPv4 CIDR of services' cluster IPs (the same on every host)")
	fs.IntVar(&cfg.Cluster.HostBits4, "host-prefix-len", daemon.DefaultHostBits4, "prefix length of each host's IPv4 subnet")
	fs.StringVar(&cluster6, "cluster-cidr6", "", "IPv6 cluster CIDR (e.g. a ULA /48); empty disables IPv6")
	fs.IntVar(&cfg.Cluster.HostBits6, "host-prefix-len6", daemon.DefaultHostBits6, "prefix length of each host's IPv6 subnet")
	fs.IntVar(&cfg.Cluster.VNI, "vni", daemon.DefaultVNI, "VXLAN network identifier")
	fs.IntVar(&cfg.Cluster.Port, "vxlan-port", daemon.DefaultVXLANPort, "VXLAN UDP port")
	fs.StringVar(&cfg.VXLANDevice, "vxlan-device", daemon.DefaultVXLANDevice, "name of the vxlan device")
	fs.StringVar(&cfg.UnderlayIface, "underlay-iface", "", "underlay interface (default: the default route's)")
	fs.StringVar(&underlayIP, "underlay-ip", "", "underlay IPv4 address (default: the interface's first)")
	fs.StringVar(&cfg.AgentSocket, "agent-socket", daemon.DefaultAgentSocket, "seccomp agent socket (the OCI runtime spec's linux.seccomp.listenerPath)")
	fs.StringVar(&cfg.KeeperCgroup, "keeper-cgroup", "", "cgroup (a path below the cgroup2 mount) to move the fd keeper to, outside slimd's own, so that killing slimd's container spares it; empty keeps it in slimd's")
	fs.StringVar(&cfg.BPFPinDir, "bpf-pin-dir", "", "bpffs directory for this slimd's maps and links (default /sys/fs/bpf/slim/<node-name>)")
	fs.StringVar(&portRange, "port-range", daemon.DefaultPortRange, "host ports reserved for the fast path (first-last)")
	fs.UintVar(&blockSize, "port-block-size", daemon.DefaultPortBlockSize, "source ports per block (a power of two)")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", daemon.DefaultLeaseTTL, "host lease TTL: how long a silent host stays in the others' tables")
	fs.DurationVar(&cfg.ResyncInterval, "resync-interval", daemon.DefaultResyncInterval, "full overlay resync period (drift repair)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9612); empty disables")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "also serve Go's profiles under /debug/pprof/ on --metrics-addr")
	fs.BoolVar(&cfg.Kubernetes, "kubernetes", false, "take pods' and namespaces' labels from the Kubernetes API server (in-cluster: the pod's service account)")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig for the API server (implies --kubernetes)")
	fs.StringVar(&memLimit, "memory-limit", "", "soft limit on slimd's memory, as GOMEMLIMIT (e.g. 180Mi; default none): set it below the container's limit")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, errReported
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.TLS() {
		// The embedded etcd's default URLs follow the TLS setting; URLs
		// given explicitly are checked against it instead.
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["etcd-listen-client"] {
			cfg.EtcdListenClient = daemon.DefaultEtcdClientTLS
		}
		if !set["etcd-listen-peer"] {
			cfg.EtcdListenPeer = daemon.DefaultEtcdPeerTLS
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		return cfg, fmt.Errorf("bad --log-level %q", logLevel)
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("host", cfg.NodeName)
	var err error
	if blockSize > 1<<15 {
		return cfg, fmt.Errorf("--port-block-size %d is too large", blockSize)
	}
	cfg.PortBlockSize = uint16(blockSize)
	if memLimit != "" {
		q, err := resource.ParseQuantity(memLimit)
		if err != nil || q.Sign() < 0 {
			return cfg, fmt.Errorf("--memory-limit %q: want a size such as 180Mi", memLimit)
		}
		cfg.MemoryLimit = q.Value()
	}
	if cfg.Kubeconfig != "" {
		cfg.Kubernetes = true
	}
	if cfg.PortFirst, cfg.PortLast, err = daemon.ParsePortRange(portRange); err != nil {
		return cfg, fmt.Errorf("--port-range: %w", err)
	}
	return cfg, parseFlags(&cfg, etcdEndpoints, cluster4, cluster6, underlayIP)
}

func parseFlags(cfg *daemon.Config, etcdEndpoints, cluster4, cluster6, underlayIP string) error {
	for e := range strings.SplitSeq(etcdEndpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			cfg.EtcdEndpoints = append(cfg.EtcdEndpoints, e)
		}
	}
	var err error
	if cfg.Cluster.Cluster4, err = netip.ParsePrefix(cluster4); err != nil {
		return fmt.Errorf("--cluster-cidr: %w", err)
	}
	if cluster6 != "" {
		if cfg.Cluster.Cluster6, err = netip.ParsePrefix(cluster6); err != nil {
			return fmt.Errorf("--cluster-cidr6: %w", err)
		}
	} else {
		cfg.Cluster.HostBits6 = 0
	}
	if underlayIP != "" {
		if cfg.UnderlayIP, err = netip.ParseAddr(underlayIP); err != nil {
			return fmt.Errorf("--underlay-ip: %w", err)
		}
	}
	return cfg.Validate()
}

// runKeeper is `slimd keeper`: the process that holds copies of the
// seccomp notification fds so that they outlive slimd (see
// internal/keeper). slimd starts it; it ignores SIGTERM, SIGINT and SIGHUP
// and ends only with SIGKILL.
func runKeeper(args []string) int {
	fs := flag.NewFlagSet("slimd keeper", flag.ContinueOnError)
	sock := fs.String("socket", "", "keeper socket")
	if err := fs.Parse(args); err != nil || *sock == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: slimd keeper --socket PATH")
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "keeper")
	if err := keeper.Serve(context.Background(), *sock, log); err != nil {
		log.Error("keeper failed", "err", err)
		return 1
	}
	return 0
}

// runEtcd is `slimd etcd`: one member of an etcd cluster and nothing else,
// from the same embedded server slimd runs. The lab runs its external
// store with it (slimctl lab up --etcd-members), and so does the
// control-plane benchmark; production clusters run etcd itself.
func runEtcd(args []string) int {
	fs := flag.NewFlagSet("slimd etcd", flag.ContinueOnError)
	var cfg embedetcd.Config
	fs.StringVar(&cfg.Name, "name", "", "member name")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "data directory (the member's files go in <dir>/etcd)")
	fs.StringVar(&cfg.ClientURL, "listen-client", "", "client URL")
	fs.StringVar(&cfg.PeerURL, "listen-peer", "", "peer URL")
	fs.StringVar(&cfg.InitialCluster, "initial-cluster", "", "every member of a new cluster, name=peer-URL,... (empty: a single member)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || cfg.Name == "" || cfg.DataDir == "" || cfg.ClientURL == "" || cfg.PeerURL == "" {
		fmt.Fprintln(os.Stderr, "usage: slimd etcd --name N --data-dir DIR --listen-client URL --listen-peer URL [--initial-cluster N=URL,...]")
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "etcd", "member", cfg.Name)
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
	defer stop()
	srv, err := embedetcd.Start(cfg)
	if err != nil {
		log.Error("etcd member failed", "err", err)
		return 1
	}
	defer srv.Close()
	log.Info("etcd member serving", "client", cfg.ClientURL)
	select {
	case <-ctx.Done():
		return 0
	case err := <-srv.Err():
		log.Error("etcd member failed", "err", err)
		return 1
	}
}
