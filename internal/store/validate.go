package store

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/slimnet/slim/internal/api"
)

// Limits are what records read from the store must fit before slimd acts
// on them: the store is writable by every host (and, until etcd has TLS
// and roles, by anyone who reaches it), so a record is checked against the
// cluster's configuration and against the host record it claims to
// belong to. A record that does not fit is refused: the caller logs and
// counts it, and does not program it.
type Limits struct {
	Config ClusterConfig
	// PortFirst..PortLast is the cluster's reserved range for port blocks
	// and listener ports (slimd's --port-range, the same on every host).
	PortFirst, PortLast uint16
}

// ErrInvalid marks a record that Limits refuses.
var ErrInvalid = errors.New("invalid record")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Host checks a host record: a routable IPv4 underlay address and subnets
// of the host prefix length inside the cluster ranges.
func (lim Limits) Host(h api.Host) error {
	if h.Name == "" {
		return invalid("host without a name")
	}
	u := h.UnderlayIP
	if !u.Is4() || u.IsLoopback() || u.IsUnspecified() || u.IsMulticast() || u.IsLinkLocalUnicast() || u == netip.IPv4Unspecified() ||
		u.As4()[0] == 255 {
		return invalid("host %s: underlay address %v is not a unicast IPv4 host address", h.Name, u)
	}
	c := lim.Config
	if !h.Subnet4.IsValid() || h.Subnet4 != h.Subnet4.Masked() {
		return invalid("host %s: subnet %v is not a network prefix", h.Name, h.Subnet4)
	}
	if c.Cluster4.IsValid() && (!c.Cluster4.Contains(h.Subnet4.Addr()) || h.Subnet4.Bits() != c.HostBits4) {
		return invalid("host %s: subnet %v is not a /%d of the cluster's %v", h.Name, h.Subnet4, c.HostBits4, c.Cluster4)
	}
	if h.Subnet4.Contains(u) {
		return invalid("host %s: subnet %v holds its own underlay address", h.Name, h.Subnet4)
	}
	if h.Subnet6.IsValid() {
		if h.Subnet6 != h.Subnet6.Masked() || (c.Cluster6.IsValid() && (!c.Cluster6.Contains(h.Subnet6.Addr()) || h.Subnet6.Bits() != c.HostBits6)) {
			return invalid("host %s: IPv6 subnet %v is not a /%d of the cluster's %v", h.Name, h.Subnet6, c.HostBits6, c.Cluster6)
		}
	}
	return nil
}

// portBlock checks a port block against the reserved range.
func (lim Limits) portBlock(b api.PortBlock) error {
	if b.Size == 0 || b.Size&(b.Size-1) != 0 || b.Start&(b.Size-1) != 0 {
		return invalid("port block %d+%d is not aligned to a power of two", b.Start, b.Size)
	}
	if b.Start < lim.PortFirst || int(b.Start)+int(b.Size)-1 > int(lim.PortLast) {
		return invalid("port block %d+%d is outside the reserved range %d-%d", b.Start, b.Size, lim.PortFirst, lim.PortLast)
	}
	return nil
}

// inSubnet checks that a virtual address belongs to the host's subnets.
func inSubnet(a netip.Addr, owner api.Host) bool {
	if a.Is4() {
		return owner.Subnet4.Contains(a) && a != owner.Subnet4.Addr() // not the gateway
	}
	return owner.Subnet6.IsValid() && owner.Subnet6.Contains(a) && a != owner.Subnet6.Addr()
}

// Endpoint checks an endpoint record against its host's record (owner;
// known false if there is none): its addresses in the host's subnets, its
// port blocks in the reserved range.
func (lim Limits) Endpoint(ep api.Endpoint, owner api.Host, known bool) error {
	if !known {
		return invalid("endpoint %s/%s: host %q unknown", ep.ContainerID, ep.IfName, ep.Host)
	}
	if err := lim.Host(owner); err != nil {
		return err
	}
	if !ep.IPv4.Is4() || !inSubnet(ep.IPv4, owner) {
		return invalid("endpoint %s/%s: address %v is not in host %s's subnet %v", ep.ContainerID, ep.IfName, ep.IPv4, owner.Name, owner.Subnet4)
	}
	if ep.IPv6.IsValid() && (!ep.IPv6.Is6() || ep.IPv6.Is4In6() || !inSubnet(ep.IPv6, owner)) {
		return invalid("endpoint %s/%s: address %v is not in host %s's subnet %v", ep.ContainerID, ep.IfName, ep.IPv6, owner.Name, owner.Subnet6)
	}
	for _, b := range ep.PortBlocks {
		if err := lim.portBlock(b); err != nil {
			return fmt.Errorf("endpoint %s/%s: %w", ep.ContainerID, ep.IfName, err)
		}
	}
	return nil
}

// Listener checks a listener record against its host's record (owner;
// known false if there is none): the record must hang on the lease the
// host's record hangs on (the host's slimd wrote it; lease and hostLease,
// 0 for none), the host address must be that host's underlay address, the
// host port in the reserved range, the virtual address in the host's
// subnets.
func (lim Limits) Listener(l api.Listener, lease int64, owner api.Host, hostLease int64, known bool) error {
	if !known {
		return invalid("listener %v: host %q unknown", netip.AddrPortFrom(l.VIP, l.Port), l.Host)
	}
	if lease == 0 || lease != hostLease {
		return invalid("listener %v: on lease %x, not on host %s's lease %x", netip.AddrPortFrom(l.VIP, l.Port), lease, owner.Name, hostLease)
	}
	if err := lim.Host(owner); err != nil {
		return err
	}
	if l.HostIP != owner.UnderlayIP {
		return invalid("listener %v: host address %v is not host %s's underlay address %v",
			netip.AddrPortFrom(l.VIP, l.Port), l.HostIP, owner.Name, owner.UnderlayIP)
	}
	if l.HostPort < lim.PortFirst || l.HostPort > lim.PortLast {
		return invalid("listener %v: host port %d is outside the reserved range %d-%d",
			netip.AddrPortFrom(l.VIP, l.Port), l.HostPort, lim.PortFirst, lim.PortLast)
	}
	if l.Port == 0 || !inSubnet(l.VIP, owner) {
		return invalid("listener %v: not a virtual address of host %s", netip.AddrPortFrom(l.VIP, l.Port), owner.Name)
	}
	return nil
}
