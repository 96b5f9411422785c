package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Defaults for Config fields left zero.
const (
	// DefaultStateDir holds the lab's state; /run is a tmpfs, so a reboot
	// forgets the lab together with its namespaces.
	DefaultStateDir = "/run/slimlab"
	// DefaultLeaseTTL is short so that a killed host disappears from the
	// store quickly in tests.
	DefaultLeaseTTL = 10 * time.Second
	// DefaultMTU is the wire's MTU: plain Ethernet, so the overlay's
	// encapsulation costs what it costs on a real network.
	DefaultMTU = 1500
	// DefaultReadyTimeout bounds Up's wait for every slimd to see all its
	// peers: etcd start (~1-2 s), registration, and one resync interval,
	// with a large margin for a 2-core machine shared with builds.
	DefaultReadyTimeout = 90 * time.Second
	// MaxHosts keeps the plan simple: hosts are .1 to .N of the underlay.
	MaxHosts = 250
)

// DefaultUnderlay is the wire's subnet; host i is its network address + i.
var DefaultUnderlay = netip.MustParsePrefix("192.168.77.0/24")

// Sentinel errors callers branch on.
var (
	// ErrNoLab: the state directory holds no lab (run Up first).
	ErrNoLab = errors.New("no lab")
	// ErrExists: a container of that name already exists.
	ErrExists = errors.New("already exists")
	// ErrNotFound: no container or host of that name.
	ErrNotFound = errors.New("not found")
	// ErrNotSupported: the lab needs Linux.
	ErrNotSupported = errors.New("not supported on this platform")
)

// Names of the objects the lab owns. Everything starts with "slimlab" so a
// sweep by name finds it.
const (
	// NetnsPrefix starts the name of every namespace of the lab.
	NetnsPrefix = "slimlab-"
	// WireNetns is the namespace holding the wire bridge.
	WireNetns = NetnsPrefix + "wire"
	// containerNetnsPrefix starts container namespaces (slimlab-c-<name>),
	// so that a container can never take a host's or the wire's name.
	containerNetnsPrefix = NetnsPrefix + "c-"
	// cgroupDir is the lab's subtree under the cgroup2 mount.
	cgroupDir = "slimlab"
	// bridgeName is the bridge in WireNetns.
	bridgeName = "wire"
	// HostIface is each host's underlay interface.
	HostIface = "eth0"
	// ContainerIface is the interface slim-cni makes in a container.
	ContainerIface = "eth0"
	// ContainerIDPrefix starts the CNI container ID of a lab container.
	ContainerIDPrefix = "slimlab-"
	// ClusterCIDR6 is the IPv6 cluster range of a lab built with IPv6.
	ClusterCIDR6 = "fd5a:11::/48"
	// resyncInterval is slimd's full resync period in the lab: short, so
	// that a lost event heals within a test's patience.
	resyncInterval = 5 * time.Second
	// etcdClientPort and etcdPeerPort are h1's embedded etcd ports.
	etcdClientPort = 2379
	etcdPeerPort   = 2380
	// labFileName records the lab's plan in the state directory.
	labFileName = "lab.json"
)

// Config says where a lab lives and, for Up, what it looks like. Only Up
// reads Hosts, Underlay, IPv6, LeaseTTL and MTU; the other operations read
// the plan Up recorded in StateDir.
type Config struct {
	// StateDir holds the lab's state (DefaultStateDir if empty).
	StateDir string
	// BinDir holds slimd and slim-cni; it is also CNI_PATH. Empty means
	// the directory recorded by Up, or else the running executable's.
	BinDir string
	// Launcher is the slimctl binary whose hidden `lab nsexec` command
	// starts processes in namespaces. Empty means BinDir/slimctl.
	Launcher string

	// Hosts is the number of hosts (1..MaxHosts).
	Hosts int
	// Underlay is the wire's IPv4 subnet (DefaultUnderlay if zero).
	Underlay netip.Prefix
	// IPv6 gives containers IPv6 addresses too (ClusterCIDR6).
	IPv6 bool
	// LeaseTTL is slimd's store lease (DefaultLeaseTTL if zero).
	LeaseTTL time.Duration
	// MTU is the wire's MTU (DefaultMTU if zero).
	MTU int
	// TLS runs the store with mutual TLS and etcd's role-based access: a
	// throwaway CA in StateDir/pki signs one certificate per host, and
	// each slimd may touch only the store's prefix.
	TLS bool
	// EtcdMembers, when not zero, runs the store as a cluster of that
	// many etcd members, each in a namespace of its own on the wire
	// (e1, e2, ... at the top addresses of the underlay), instead of
	// h1's embedded etcd; so the store can fail apart from any host.
	EtcdMembers int
	// ClusterCIDR is the IPv4 cluster range (slimd's default if zero);
	// PortBlockSize slimd's source port block size (its default if 0).
	// The control-plane benchmark's simulated hosts need room for more
	// hosts and containers than the defaults give.
	ClusterCIDR   netip.Prefix
	PortBlockSize int
	// SlimdMemoryLimit is passed to slimd's --memory-limit ("": none).
	SlimdMemoryLimit string
	// ReadyTimeout bounds Up's wait for the hosts (DefaultReadyTimeout).
	ReadyTimeout time.Duration

	// Progress receives one line per step with the elapsed time; nil
	// means silent.
	Progress io.Writer
}

// plan is what Up records in StateDir/lab.json, and what every other
// operation works from.
type plan struct {
	Hosts    int          `json:"hosts"`
	Underlay netip.Prefix `json:"underlay"`
	IPv6     bool         `json:"ipv6"`
	LeaseTTL string       `json:"leaseTTL"`
	MTU      int          `json:"mtu"`
	TLS      bool         `json:"tls,omitempty"`
	// EtcdMembers is the size of the external etcd cluster (0: h1's).
	EtcdMembers   int          `json:"etcdMembers,omitempty"`
	ClusterCIDR   netip.Prefix `json:"clusterCIDR,omitzero"`
	PortBlockSize int          `json:"portBlockSize,omitempty"`
	// SlimdMemoryLimit is slimd's --memory-limit ("": none).
	SlimdMemoryLimit string    `json:"slimdMemoryLimit,omitempty"`
	BinDir           string    `json:"binDir"`
	Created          time.Time `json:"created"`
}

func (c Config) stateDir() string {
	if c.StateDir == "" {
		return DefaultStateDir
	}
	return c.StateDir
}

// withDefaults fills the zero fields of c that Up needs.
func (c Config) withDefaults() Config {
	c.StateDir = c.stateDir()
	if !c.Underlay.IsValid() {
		c.Underlay = DefaultUnderlay
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	return c
}

// maxSocketPath is the room a unix socket path has (sun_path, with its NUL).
const maxSocketPath = 107

// validate checks a Config with defaults applied, for Up.
func (c Config) validate() error {
	if c.Hosts < 1 || c.Hosts > MaxHosts {
		return fmt.Errorf("%d hosts: want 1 to %d", c.Hosts, MaxHosts)
	}
	if !c.Underlay.Addr().Is4() {
		return fmt.Errorf("underlay %s: want an IPv4 prefix", c.Underlay)
	}
	if _, err := hostIP(c.Underlay, c.Hosts); err != nil {
		return err
	}
	if c.EtcdMembers < 0 || c.EtcdMembers > MaxEtcdMembers {
		return fmt.Errorf("%d etcd members: want 0 (h1's embedded etcd) to %d", c.EtcdMembers, MaxEtcdMembers)
	}
	if c.EtcdMembers > 0 {
		if c.TLS {
			return errors.New("tls with external etcd members is not supported: use one or the other")
		}
		if c.Hosts >= memberSlot(c.Underlay, c.EtcdMembers) {
			return fmt.Errorf("underlay %s has no room for %d hosts and %d etcd members", c.Underlay, c.Hosts, c.EtcdMembers)
		}
	}
	if c.LeaseTTL < time.Second {
		return fmt.Errorf("lease ttl %s: want at least 1s", c.LeaseTTL)
	}
	if c.MTU < 1280 || c.MTU > 65535 {
		return fmt.Errorf("mtu %d: want 1280 to 65535", c.MTU)
	}
	if !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("state dir %q: want an absolute path", c.StateDir)
	}
	if s := socketPath(c.StateDir, HostName(c.Hosts)); len(s) > maxSocketPath {
		return fmt.Errorf("state dir %q: socket path %s is longer than %d bytes", c.StateDir, s, maxSocketPath)
	}
	return nil
}

// HostName is the name of host i (1-based): h1, h2, ...
func HostName(i int) string { return "h" + strconv.Itoa(i) }

// hostIndex parses a host name; 0 if it is not one.
func hostIndex(name string) int {
	n, ok := strings.CutPrefix(name, "h")
	if !ok || n == "" || n[0] == '0' {
		return 0
	}
	i, err := strconv.Atoi(n)
	if err != nil || i < 1 {
		return 0
	}
	return i
}

// hostIP is host i's underlay address: the prefix's network address + i.
func hostIP(underlay netip.Prefix, i int) (netip.Addr, error) {
	p := underlay.Masked()
	bits := p.Addr().BitLen() - p.Bits()
	if bits < 2 || (bits < 31 && i >= 1<<bits-1) || i < 1 {
		return netip.Addr{}, fmt.Errorf("underlay %s has no room for host %d", underlay, i)
	}
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), nil
}

// HostNetns is the namespace name of host i.
func HostNetns(host string) string { return NetnsPrefix + host }

// ContainerNetns is the namespace name of container name.
func ContainerNetns(name string) string { return containerNetnsPrefix + name }

// ContainerID is the CNI container ID of container name.
func ContainerID(name string) string { return ContainerIDPrefix + name }

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// ValidateName checks a container name: 1 to 20 characters of [a-z0-9-],
// not starting with '-'. The limit keeps slimlab-c-<name> and the CNI
// container ID short. Run also refuses host names (h1, h2, ...), which
// Exec takes as hosts.
func ValidateName(name string) error {
	if !nameRe.MatchString(name) {
		return fmt.Errorf("invalid container name %q: want 1-20 characters of [a-z0-9-], starting with a letter or digit", name)
	}
	return nil
}

// Paths in the state directory.
func planPath(dir string) string         { return filepath.Join(dir, labFileName) }
func socketPath(dir, host string) string { return filepath.Join(dir, host, "slimd.sock") }

// MetricsAddr is where each lab slimd serves Prometheus metrics, inside
// its host's namespace.
const MetricsAddr = "127.0.0.1:9612"

// BPFPinRoot holds the lab's slimds' BPF pins (one directory per host);
// Down removes it, which detaches the programs.
const BPFPinRoot = "/sys/fs/bpf/slimlab"

func agentPath(dir, host string) string     { return filepath.Join(dir, host, "agent.sock") }
func slimdLogPath(dir, host string) string  { return filepath.Join(dir, host, "slimd.log") }
func slimdPIDPath(dir, host string) string  { return filepath.Join(dir, host, "slimd.pid") }
func slimdDataPath(dir, host string) string { return filepath.Join(dir, host, "data") }
func containersDir(dir string) string       { return filepath.Join(dir, "containers") }
func containerFile(dir, name string) string { return filepath.Join(dir, "containers", name+".json") }
func containerLog(dir, name string) string  { return filepath.Join(dir, "containers", name+".log") }
func cniCacheDir(dir string) string         { return filepath.Join(dir, "cni") }

// The lab's cgroups under the cgroup2 mount root: per host one for its
// slimd, one for slimd's fd keeper, one for commands run on the host itself (lab exec hN), and one
// per container.

// SlimdCgroup is the cgroup of host's slimd.
func SlimdCgroup(root, host string) string { return filepath.Join(root, cgroupDir, host, "slimd") }

// KeeperCgroup is the cgroup of host's slimd's fd keeper.
func KeeperCgroup(root, host string) string { return filepath.Join(root, cgroupDir, host, "keeper") }

// HostCgroup is the cgroup of commands run on host itself.
func HostCgroup(root, host string) string { return filepath.Join(root, cgroupDir, host, "host") }

// ContainerCgroup is the cgroup of container name on host.
func ContainerCgroup(root, host, name string) string {
	return filepath.Join(root, cgroupDir, host, "c-"+name)
}

// SocketPath is the API socket of host's slimd in the lab of cfg.
func SocketPath(cfg Config, host string) string { return socketPath(cfg.stateDir(), host) }

// slimdArgs is slimd's command line for host i of plan p.
func slimdArgs(dir string, p plan, i int) ([]string, error) {
	host := HostName(i)
	args := []string{
		"--node-name", host,
		"--data-dir", slimdDataPath(dir, host),
		"--socket", socketPath(dir, host),
		"--agent-socket", agentPath(dir, host),
		"--bpf-pin-dir", filepath.Join(BPFPinRoot, host),
		// As the DaemonSet does: a kill of slimd's whole cgroup (what a
		// runtime does to a container) spares the fd keeper.
		"--keeper-cgroup", filepath.Join(cgroupDir, host, "keeper"),
		// Each host is its own namespace, so every slimd can use the
		// same loopback address for metrics.
		"--metrics-addr", MetricsAddr,
		// Profiles for whoever investigates a lab slimd: its metrics
		// address is the host namespace's loopback.
		"--pprof",
		"--underlay-iface", HostIface,
		"--lease-ttl", p.LeaseTTL,
		"--resync-interval", resyncInterval.String(),
		"--log-level", "debug",
	}
	h1, err := hostIP(p.Underlay, 1)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if p.TLS {
		scheme = "https"
		f := certFiles(dir, host)
		args = append(args, "--etcd-cacert", f.CACert, "--etcd-cert", f.Cert, "--etcd-key", f.Key)
	}
	switch {
	case p.EtcdMembers > 0:
		eps, err := p.etcdEndpoints()
		if err != nil {
			return nil, err
		}
		args = append(args, "--etcd-endpoints", strings.Join(eps, ","))
	case i == 1:
		// h1 runs the embedded etcd on its underlay address; the others join.
		args = append(args,
			"--etcd-listen-client", fmt.Sprintf("%s://%s", scheme, netip.AddrPortFrom(h1, etcdClientPort)),
			"--etcd-listen-peer", fmt.Sprintf("%s://%s", scheme, netip.AddrPortFrom(h1, etcdPeerPort)))
	default:
		args = append(args, "--etcd-endpoints", fmt.Sprintf("%s://%s", scheme, netip.AddrPortFrom(h1, etcdClientPort)))
	}
	if p.IPv6 {
		args = append(args, "--cluster-cidr6", ClusterCIDR6)
	}
	if p.ClusterCIDR.IsValid() {
		args = append(args, "--cluster-cidr", p.ClusterCIDR.String())
	}
	if p.SlimdMemoryLimit != "" {
		args = append(args, "--memory-limit", p.SlimdMemoryLimit)
	}
	if p.PortBlockSize > 0 {
		args = append(args, "--port-block-size", strconv.Itoa(p.PortBlockSize))
	}
	return args, nil
}

// loadPlan reads the plan Up recorded in dir.
func loadPlan(dir string) (plan, error) {
	var p plan
	b, err := os.ReadFile(planPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return p, fmt.Errorf("%w in %s (slimctl lab up makes one)", ErrNoLab, dir)
	}
	if err != nil {
		return p, err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("read %s: %w", planPath(dir), err)
	}
	if p.Hosts < 1 || p.Hosts > MaxHosts || !p.Underlay.IsValid() {
		return p, fmt.Errorf("read %s: bad plan (hosts %d, underlay %s)", planPath(dir), p.Hosts, p.Underlay)
	}
	return p, nil
}

// hostOf checks that host names one of p's hosts and returns its index.
func (p plan) hostOf(host string) (int, error) {
	i := hostIndex(host)
	if i < 1 || i > p.Hosts {
		return 0, fmt.Errorf("host %q: %w (the lab has h1 to h%d)", host, ErrNotFound, p.Hosts)
	}
	return i, nil
}

// binDir resolves the directory of slimd and slim-cni.
func (c Config) binDir(p plan) (string, error) {
	if c.BinDir != "" {
		return filepath.Abs(c.BinDir)
	}
	if p.BinDir != "" {
		return p.BinDir, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find bin dir: %w", err)
	}
	return filepath.Dir(exe), nil
}

// launcher resolves the slimctl binary used as the launcher.
func (c Config) launcher(binDir string) string {
	if c.Launcher != "" {
		return c.Launcher
	}
	return filepath.Join(binDir, "slimctl")
}
