// Package api is slimd's local API: the request and response types, request
// validation, the HTTP server that serves them on a unix socket, and the
// client that slim-cni and slimctl use. It knows nothing of etcd or the
// kernel; the daemon plugs its logic in through the Backend interface.
package api

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// DefaultSocket is where slimd listens unless told otherwise.
const DefaultSocket = "/run/slim/slimd.sock"

// Host is one member of the cluster as recorded in the store.
type Host struct {
	Name       string       `json:"name"`
	UnderlayIP netip.Addr   `json:"underlayIP"`
	VTEPMAC    string       `json:"vtepMAC"`
	Subnet4    netip.Prefix `json:"subnet4"`
	Subnet6    netip.Prefix `json:"subnet6,omitzero"`
	MTU        int          `json:"mtu"`
	Started    time.Time    `json:"started"`
}

// Endpoint is one container interface attached to the Slim network.
type Endpoint struct {
	ContainerID string            `json:"containerID"`
	IfName      string            `json:"ifName"`
	Host        string            `json:"host"`
	IPv4        netip.Addr        `json:"ipv4"`
	IPv6        netip.Addr        `json:"ipv6,omitzero"`
	Labels      map[string]string `json:"labels,omitempty"`
	Netns       string            `json:"netns"`
	Created     time.Time         `json:"created"`
	// PortBlocks are the endpoint's host source ports for the fast path.
	PortBlocks []PortBlock `json:"portBlocks,omitempty"`
	// Ports are the ports the endpoint names, for network policies.
	Ports []NamedPort `json:"ports,omitempty"`
}

// PortBlock is a block of host source ports owned by one endpoint: the
// fast path binds that endpoint's host sockets to ports of its blocks, so
// any host can tell the client's virtual IP from (host IP, port). Start is
// aligned to Size, a power of two.
type PortBlock struct {
	Start uint16 `json:"start"`
	Size  uint16 `json:"size"`
	// IPv6: the block serves the endpoint's connections to IPv6 virtual
	// addresses, and its ports map back to the endpoint's IPv6 address
	// (a server then sees the client's IPv6 address, not its IPv4 one).
	IPv6 bool `json:"ipv6,omitempty"`
}

// BlockVIP is the virtual address a port block of ep maps back to: its
// IPv6 address for an IPv6 block, else its IPv4 one (invalid if ep has
// no address of that family).
func (ep Endpoint) BlockVIP(b PortBlock) netip.Addr {
	if b.IPv6 {
		return ep.IPv6
	}
	return ep.IPv4
}

// Contains reports whether port is in the block.
func (b PortBlock) Contains(port uint16) bool {
	return b.Size > 0 && port >= b.Start && int(port) < int(b.Start)+int(b.Size)
}

// Listener is a published fast-path listener: connections to VIP:Port go
// host to host to HostIP:HostPort.
type Listener struct {
	VIP         netip.Addr `json:"vip"`
	Port        uint16     `json:"port"`
	Host        string     `json:"host"`
	HostIP      netip.Addr `json:"hostIP"`
	HostPort    uint16     `json:"hostPort"`
	ContainerID string     `json:"containerID"`
	IfName      string     `json:"ifName"`
}

// Connection is one fast-path TCP connection on a host, as slimctl
// connections lists it: the 4-tuple the applications see and the one on the
// wire.
type Connection struct {
	Container     string         `json:"container"`
	Role          string         `json:"role"` // "client" or "server"
	VirtualLocal  netip.AddrPort `json:"virtualLocal"`
	VirtualRemote netip.AddrPort `json:"virtualRemote"`
	HostLocal     netip.AddrPort `json:"hostLocal"`
	HostRemote    netip.AddrPort `json:"hostRemote"`
	State         string         `json:"state"`
	// Since is when the broker swapped the socket in; zero if unknown
	// (accepted sockets, or connections older than this slimd).
	Since time.Time `json:"since,omitzero"`
	// Service is the service (namespace/name) a client connected
	// through (VirtualRemote is then the backend it went to).
	Service string `json:"service,omitempty"`
}

// FastPathStatus is the state of the fast path on one host.
type FastPathStatus struct {
	// Enabled is the cluster-wide switch.
	Enabled bool `json:"enabled"`
	// Active is whether this host uses the fast path now: the switch is
	// on and the BPF programs are loaded.
	Active bool `json:"active"`
	// BPF says whether the address rewrite and guard programs are loaded.
	BPF bool `json:"bpf"`
	// Sessions is the number of supervised process trees (notification fds).
	Sessions int `json:"sessions"`
	// BPFPortBlocks and BPFListeners count the entries of the BPF address
	// maps (they mirror the store).
	BPFPortBlocks int `json:"bpfPortBlocks"`
	BPFListeners  int `json:"bpfListeners"`
}

// Check is one finding of slimctl check.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// Problem marks a failed check that breaks something (exit code 3);
	// a failed check without it is a degraded but safe mode.
	Problem bool `json:"problem"`
}

// EndpointRequest asks slimd for addresses for a new container interface.
// It is idempotent: asking again for the same ContainerID and IfName returns
// the endpoint already allocated.
type EndpointRequest struct {
	ContainerID string            `json:"containerID"`
	IfName      string            `json:"ifName"`
	Netns       string            `json:"netns"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Ports are the ports the container names (NAME=PORT/PROTO), for
	// network policies that name ports.
	Ports []NamedPort `json:"ports,omitempty"`
}

// Attachment names one container interface, as CNI GC lists them.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// GCRequest lists the attachments that are still valid on this host; slimd
// releases every other endpoint of the host.
type GCRequest struct {
	Valid []Attachment `json:"valid"`
}

// GCResponse lists what a GC released.
type GCResponse struct {
	Released []Attachment `json:"released"`
}

// Status describes the local slimd.
type Status struct {
	Host          Host     `json:"host"`
	Version       string   `json:"version"`
	EtcdEndpoints []string `json:"etcdEndpoints"`
	EmbeddedEtcd  bool     `json:"embeddedEtcd"`
	// StoreSynced is true once the local caches hold a full copy of the store.
	StoreSynced bool `json:"storeSynced"`
	// StoreContact is when the store last answered slimd (its lease
	// keepalives, every third of the lease TTL); long ago means the store
	// is unreachable from this host.
	StoreContact time.Time `json:"storeContact,omitzero"`
	// LeaseTTL is the host lease's TTL in seconds.
	LeaseTTL int `json:"leaseTTL,omitempty"`
	// Peers is the number of remote hosts the overlay has programmed.
	Peers int `json:"peers"`
	// KnownHosts is the number of hosts in the store, this one included.
	KnownHosts int `json:"knownHosts"`
	// StoreKeys is the number of keys under the cluster's prefix (-1 if
	// the store could not be asked).
	StoreKeys int64 `json:"storeKeys"`
	// Gateway4/6 are the link-local gateways containers route through.
	Gateway4 netip.Addr `json:"gateway4"`
	Gateway6 netip.Addr `json:"gateway6,omitzero"`
	// VXLAN device facts.
	VXLANDevice string `json:"vxlanDevice"`
	VNI         int    `json:"vni"`
	VXLANPort   int    `json:"vxlanPort"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// Container IDs are what runtimes hand CNI: runc and CRI use hex, but
// anything printable without path separators is accepted.
var containerIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$`)

// Label keys follow the Kubernetes shape loosely: optional prefix, name.
var labelKeyRe = regexp.MustCompile(`^([A-Za-z0-9.\-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9_.\-]{0,61}[A-Za-z0-9])?$`)

// Values allow 253 characters: Kubernetes object names (pod names land
// here as io.kubernetes.pod.name) may be that long.
var labelValRe = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9_.\-]{0,251}[A-Za-z0-9])?)?$`)

// ValidateContainerID checks a container ID.
func ValidateContainerID(id string) error {
	if !containerIDRe.MatchString(id) {
		return fmt.Errorf("invalid container id %q: want 1-255 characters of [A-Za-z0-9_.-], starting alphanumeric", id)
	}
	return nil
}

// ValidateIfName checks an interface name the way the kernel would.
func ValidateIfName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("interface name is empty")
	case len(name) > 15:
		return fmt.Errorf("interface name %q is longer than 15 bytes", name)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	case strings.ContainsAny(name, "/: \t\n"):
		return fmt.Errorf("interface name %q contains '/', ':' or white space", name)
	}
	return nil
}

// ValidateLabels checks label keys and values.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > 64 {
		return fmt.Errorf("%d labels: at most 64 allowed", len(labels))
	}
	for k, v := range labels {
		if !labelKeyRe.MatchString(k) {
			return fmt.Errorf("invalid label key %q", k)
		}
		if !labelValRe.MatchString(v) {
			return fmt.Errorf("invalid value %q for label %q", v, k)
		}
	}
	return nil
}

// Validate checks an attachment.
func (a Attachment) Validate() error {
	if err := ValidateContainerID(a.ContainerID); err != nil {
		return err
	}
	return ValidateIfName(a.IfName)
}

// Validate checks an endpoint request.
func (r EndpointRequest) Validate() error {
	if err := (Attachment{r.ContainerID, r.IfName}).Validate(); err != nil {
		return err
	}
	if r.Netns == "" || !strings.HasPrefix(r.Netns, "/") || len(r.Netns) > 4096 {
		return fmt.Errorf("invalid netns path %q: want an absolute path", r.Netns)
	}
	if ns, ok := r.Labels[LabelPodNamespace]; ok {
		if err := ValidateNamespace(ns); err != nil {
			return err
		}
	}
	if err := ValidatePorts(r.Ports); err != nil {
		return err
	}
	return ValidateLabels(r.Labels)
}
