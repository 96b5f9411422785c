// Package daemon is slimd: it wires the store (etcd, embedded or
// external) and its watch-fed caches, the VXLAN overlay, the fast path
// (the broker, the BPF programs, the DNAT table and the control-plane
// guard, the fd keeper and the journal), the local API and the metrics
// into one process per host, and shuts them down gracefully. Every record
// read from the store is checked (store.Limits, refused.go) before it is
// programmed anywhere.
//
// What slimd deliberately leaves in place when it stops: the vxlan device,
// its neighbour, FDB and route entries, the containers' veths and host
// routes, the pinned BPF programs and maps, the nftables table, the keeper
// process (holding the notification fds), the journal, and its host lease
// (which expires by TTL). A restarted slimd adopts all of it, so stopping
// or restarting slimd never cuts running containers' traffic.
package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/slimnet/slim/internal/store"
	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// Config is slimd's configuration, filled from flags by cmd/slimd.
type Config struct {
	NodeName string
	DataDir  string
	Socket   string

	// EtcdEndpoints selects an external etcd cluster; empty runs the
	// embedded single-node etcd listening on EtcdListenClient/Peer.
	EtcdEndpoints    []string
	EtcdListenClient string
	EtcdListenPeer   string
	Prefix           string
	// EtcdTLS is mutual TLS to etcd: TrustedCAFile verifies the server
	// (and, for the embedded etcd, the clients), CertFile and KeyFile are
	// slimd's own pair (also the embedded etcd's server certificate). All
	// empty means plaintext.
	EtcdTLS transport.TLSInfo

	Cluster store.ClusterConfig
	// ServiceCIDR is where services' cluster IPs come from. Every slimd
	// of a cluster must have the same (the one that takes an apply
	// allocates).
	ServiceCIDR netip.Prefix

	UnderlayIface string
	UnderlayIP    netip.Addr
	VXLANDevice   string

	// AgentSocket is where runtimes (OCI seccomp listenerPath) and the
	// lab's launcher hand over seccomp notification fds.
	AgentSocket string
	// PortFirst..PortLast is the host port range reserved for the fast
	// path, cut into blocks of PortBlockSize (a power of two).
	PortFirst, PortLast uint16
	PortBlockSize       uint16
	// BPFPinDir is where the BPF maps and links are pinned (default
	// /sys/fs/bpf/slim/<node>).
	BPFPinDir string
	// KeeperCgroup is the cgroup, a path below the cgroup2 mount, that
	// slimd moves its fd keeper to; empty leaves it in slimd's. A runtime
	// that stops slimd's container kills its whole cgroup, the keeper too,
	// and with it every pod's fast path for new connects.
	KeeperCgroup string

	LeaseTTL       time.Duration
	ResyncInterval time.Duration
	MetricsAddr    string
	// Pprof serves Go's profiles under /debug/pprof/ on MetricsAddr.
	Pprof bool
	// Kubernetes: pods' and namespaces' labels come from the API server,
	// reached with Kubeconfig, or from inside the cluster if it is "".
	Kubernetes bool
	Kubeconfig string
	// MemoryLimit is a soft limit on the Go runtime's memory (as
	// GOMEMLIMIT), 0 for none: the garbage collector works harder as the
	// heap nears it instead of letting it grow to twice what is live
	// (docs/scale.md). Set it below the container's memory limit.
	MemoryLimit int64
	Version     string

	Log *slog.Logger
}

// Defaults for flags.
const (
	DefaultDataDir    = "/var/lib/slim"
	DefaultEtcdClient = "http://127.0.0.1:2379"
	DefaultEtcdPeer   = "http://127.0.0.1:2380"
	// DefaultEtcdClientTLS and DefaultEtcdPeerTLS replace the two above
	// when TLS is configured.
	DefaultEtcdClientTLS = "https://127.0.0.1:2379"
	DefaultEtcdPeerTLS   = "https://127.0.0.1:2380"
	DefaultCluster4      = "10.244.0.0/16"
	DefaultServiceCIDR   = "10.96.0.0/16"
	DefaultHostBits4     = 24
	DefaultHostBits6     = 64
	DefaultVNI           = 1
	DefaultVXLANPort     = 4789
	DefaultVXLANDevice   = "slim-vxlan"
	DefaultLeaseTTL      = 20 * time.Second
	DefaultAgentSocket   = "/run/slim/agent.sock"
	// The fast path's port range sits below the default ephemeral range
	// (32768-60999), so reserving it takes nothing from other programs.
	DefaultPortRange     = "20480-32767"
	DefaultPortBlockSize = 256
	// MinMemoryLimit is the least MemoryLimit: below it the collector
	// would run without pause in a small cluster.
	MinMemoryLimit        = 64 << 20
	DefaultResyncInterval = 30 * time.Second
)

// Host names become etcd key segments and label values: keep them to DNS
// label characters.
var nodeNameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9.\-]{0,61}[a-z0-9])?$`)

// Validate checks the configuration before anything is touched.
func (c *Config) Validate() error {
	var errs []error
	if c.MemoryLimit != 0 && c.MemoryLimit < MinMemoryLimit {
		errs = append(errs, fmt.Errorf("memory limit %d bytes: want 0 (none) or at least %d MiB (slimd needs about that to start)", c.MemoryLimit, MinMemoryLimit>>20))
	}
	if !nodeNameRe.MatchString(c.NodeName) {
		errs = append(errs, fmt.Errorf("node name %q: want lowercase letters, digits, '.' or '-', at most 63", c.NodeName))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty"))
	}
	if c.Socket == "" {
		errs = append(errs, errors.New("socket path is empty"))
	}
	if k := c.KeeperCgroup; k != "" && (!filepath.IsLocal(k) || filepath.Clean(k) == ".") {
		errs = append(errs, fmt.Errorf("keeper cgroup %q: want a path below the cgroup2 mount, such as slim.keeper", k))
	}
	errs = append(errs, c.validateEtcd()...)
	if err := c.Cluster.Plan().Validate(); err != nil {
		errs = append(errs, err)
	}
	switch sc := c.ServiceCIDR; {
	case !sc.IsValid() || !sc.Addr().Is4() || sc.Bits() < 8 || sc.Bits() > 30:
		errs = append(errs, fmt.Errorf("service cidr %v: want an IPv4 prefix of /8 to /30", sc))
	case sc.Overlaps(c.Cluster.Cluster4):
		errs = append(errs, fmt.Errorf("service cidr %v overlaps the cluster cidr %v", sc, c.Cluster.Cluster4))
	}
	if c.Cluster.VNI < 1 || c.Cluster.VNI > 1<<24-1 {
		errs = append(errs, fmt.Errorf("vni %d: want 1..16777215", c.Cluster.VNI))
	}
	if c.Cluster.Port < 1 || c.Cluster.Port > 65535 {
		errs = append(errs, fmt.Errorf("vxlan port %d: want 1..65535", c.Cluster.Port))
	}
	if c.UnderlayIP.IsValid() && !c.UnderlayIP.Is4() {
		errs = append(errs, fmt.Errorf("underlay ip %v: only IPv4 underlays are supported", c.UnderlayIP))
	}
	if len(c.VXLANDevice) == 0 || len(c.VXLANDevice) > 15 {
		errs = append(errs, fmt.Errorf("vxlan device name %q: want 1-15 bytes", c.VXLANDevice))
	}
	if c.AgentSocket == "" {
		errs = append(errs, errors.New("agent socket path is empty"))
	}
	if c.PortBlockSize == 0 || c.PortBlockSize&(c.PortBlockSize-1) != 0 || c.PortBlockSize > 4096 {
		errs = append(errs, fmt.Errorf("port block size %d: want a power of two up to 4096", c.PortBlockSize))
	} else if c.PortFirst == 0 || int(c.PortLast)-int(c.PortFirst)+1 < 2*int(c.PortBlockSize) {
		errs = append(errs, fmt.Errorf("port range %d-%d: want room for at least two blocks of %d", c.PortFirst, c.PortLast, c.PortBlockSize))
	}
	if c.LeaseTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("lease ttl %s: want at least 2s", c.LeaseTTL))
	}
	if c.ResyncInterval < time.Second {
		errs = append(errs, fmt.Errorf("resync interval %s: want at least 1s", c.ResyncInterval))
	}
	return errors.Join(errs...)
}

// TLS reports whether slimd talks to etcd over TLS.
func (c *Config) TLS() bool { return c.EtcdTLS.TrustedCAFile != "" || !c.EtcdTLS.Empty() }

// validateEtcd checks the store's URLs against the TLS settings: a URL's
// scheme must say what the connection does, so that nobody believes a
// plaintext store is encrypted, or the other way round.
func (c *Config) validateEtcd() []error {
	var errs []error
	t := c.EtcdTLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("etcd tls: --etcd-cert and --etcd-key go together"))
	}
	want, why := "http", "no TLS is configured (--etcd-cacert, --etcd-cert, --etcd-key)"
	if c.TLS() {
		want, why = "https", "TLS is configured"
	}
	check := func(what, e string) {
		u, err := url.Parse(e)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			errs = append(errs, fmt.Errorf("%s %q: want http(s)://host:port", what, e))
		case u.Scheme != want:
			errs = append(errs, fmt.Errorf("%s %q: want %s://, %s", what, e, want, why))
		}
	}
	for _, e := range c.EtcdEndpoints {
		check("etcd endpoint", e)
	}
	if len(c.EtcdEndpoints) > 0 {
		return errs
	}
	check("embedded etcd client url", c.EtcdListenClient)
	check("embedded etcd peer url", c.EtcdListenPeer)
	if c.TLS() && (t.TrustedCAFile == "" || t.CertFile == "" || t.KeyFile == "") {
		// Without a CA the embedded etcd could not check client
		// certificates, and TLS without them authenticates nobody.
		errs = append(errs, errors.New("embedded etcd tls: give --etcd-cacert, --etcd-cert and --etcd-key together"))
	}
	return errs
}

// Blocks is the port range the fast path's source port blocks come from.
func (c Config) Blocks() store.BlockRange {
	return store.BlockRange{First: c.PortFirst, Last: c.PortLast, Size: c.PortBlockSize}
}

// ParsePortRange parses "first-last" (the --port-range flag).
func ParsePortRange(s string) (uint16, uint16, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, errors.New("want first-last")
	}
	f, err1 := strconv.ParseUint(a, 10, 16)
	l, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil || f == 0 || f > l {
		return 0, 0, fmt.Errorf("%q: want first-last with 0 < first <= last < 65536", s)
	}
	return uint16(f), uint16(l), nil
}
