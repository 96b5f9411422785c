package broker

import (
	"net/netip"

	"github.com/slimnet/slim/internal/api"
)

// Reason says why the broker left a call to the kernel (the overlay). It
// is a metric label, so the set is fixed.
type Reason string

// Reasons for declining the fast path.
const (
	ReasonDisabled     Reason = "disabled"      // cluster-wide switch off
	ReasonNotSlim      Reason = "not_slim"      // container has no Slim endpoint or opted out
	ReasonNotInet      Reason = "not_inet"      // not an IPv4/IPv6 address
	ReasonNotTCP       Reason = "not_tcp"       // UDP, raw, unix, ... (TCP and MPTCP are swapped)
	ReasonForeignNetns Reason = "foreign_netns" // socket of another (nested) namespace
	ReasonNoListener   Reason = "no_listener"   // no published listener at the destination
	ReasonNoBackend    Reason = "no_backend"    // a service port without a backend: refused (ECONNREFUSED)
	ReasonLocalOnly    Reason = "local_only"    // listener bound to loopback or port 0
	ReasonInUse        Reason = "in_use"        // the socket is connected, connecting or listening already
	ReasonNoPorts      Reason = "no_ports"      // the container's source port blocks are full or cannot be claimed
	ReasonOption       Reason = "option"        // the socket carries an option value the guard refuses on host sockets
	ReasonPermission   Reason = "permission"    // slimd may not take the socket (no CAP_SYS_PTRACE over the process)
	ReasonUnsupported  Reason = "unsupported"   // the kernel lacks what a swap needs (pidfd_getfd, PIDFD_THREAD)
	ReasonStore        Reason = "store"         // the store (etcd) did not answer in time: a listener stays in the container
	ReasonError        Reason = "error"         // the swap failed; the kernel does it instead
)

// Container is what the broker knows of one container it supervises.
type Container struct {
	ID     string
	IfName string
	VIP4   netip.Addr
	VIP6   netip.Addr
	// NoSlim keeps the container on the overlay: its calls are answered
	// CONTINUE (it is still supervised, so it can be switched on).
	NoSlim bool
}

// View is the cluster state the decisions read: served from watch-fed
// caches, never from the network.
type View interface {
	FastPath() bool
	// Listener returns the published listener at vip:port.
	Listener(vip netip.Addr, port uint16) (api.Listener, bool)
}

// ServiceView is a View that knows services: a connect to a service port
// with no backend is refused at once (ECONNREFUSED), not left to time out.
type ServiceView interface {
	IsService(vip netip.Addr, port uint16) bool
}

// own maps a loopback destination to the container's own virtual address:
// a client in the same container reaching 127.0.0.1:port (or ::1) gets the
// container's own published listener.
func (c *Container) own(a netip.Addr) netip.Addr {
	switch {
	case a.Is4() && a.IsLoopback():
		return c.VIP4
	case a.Is6() && a.IsLoopback():
		return c.VIP6
	}
	return a
}

// routeConnect decides where a TCP connect to dst from container c goes:
// to a published listener (the fast path) or, with a reason, to the kernel.
func routeConnect(dst netip.AddrPort, c *Container, v View) (api.Listener, Reason) {
	if !v.FastPath() {
		return api.Listener{}, ReasonDisabled
	}
	if c == nil || c.NoSlim || !c.VIP4.IsValid() {
		return api.Listener{}, ReasonNotSlim
	}
	a := c.own(dst.Addr())
	if !a.IsValid() || dst.Port() == 0 {
		return api.Listener{}, ReasonNoListener
	}
	l, ok := v.Listener(a, dst.Port())
	if !ok {
		return api.Listener{}, ReasonNoListener
	}
	return l, ""
}

// listenVIPs returns the virtual addresses a socket bound to bound
// listens on, once swapped: the container's VIP for a wildcard or VIP
// bind (both VIPs for a dual-stack IPv6 wildcard). Loopback-only and
// unbound sockets stay in the container.
func listenVIPs(bound netip.AddrPort, v6only bool, c *Container, v View) ([]netip.AddrPort, Reason) {
	if !v.FastPath() {
		return nil, ReasonDisabled
	}
	if c == nil || c.NoSlim || !c.VIP4.IsValid() {
		return nil, ReasonNotSlim
	}
	a, port := bound.Addr(), bound.Port()
	if port == 0 || a.IsLoopback() {
		return nil, ReasonLocalOnly
	}
	var out []netip.AddrPort
	switch {
	case a == netip.IPv4Unspecified():
		out = append(out, netip.AddrPortFrom(c.VIP4, port))
	case a == netip.IPv6Unspecified():
		if c.VIP6.IsValid() {
			out = append(out, netip.AddrPortFrom(c.VIP6, port))
		}
		if !v6only {
			out = append(out, netip.AddrPortFrom(c.VIP4, port))
		}
	case a == c.VIP4 || (c.VIP6.IsValid() && a == c.VIP6):
		out = append(out, netip.AddrPortFrom(a, port))
	default:
		// Bound to some other local address of the container (a second
		// interface): not a virtual address we publish.
		return nil, ReasonLocalOnly
	}
	if len(out) == 0 {
		return nil, ReasonLocalOnly
	}
	return out, ""
}
