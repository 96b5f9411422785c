package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// errInjected is returned by a step that a test made fail.
var errInjected = errors.New("injected failure")

// netlinkDataplane programs peers on one vxlan device with netlink. Its
// methods are called by one goroutine (the reconciler's).
type netlinkDataplane struct {
	h    *netlink.Handle
	link int          // vxlan device ifindex
	name string       // vxlan device name, for errors
	cfg  DeviceConfig // what the device is made from
	// ensure makes the device again (EnsureDevice, in the namespace the
	// dataplane works in) when it was deleted under us.
	ensure func(DeviceConfig) (*Device, error)
	local4 netip.Prefix // the local pod subnets, which no peer may overlap
	local6 netip.Prefix

	// failStep, if set, makes EnsurePeer fail just before the step of that
	// name ("neigh4", "neigh6", "fdb", "route4", "route6"). Tests only.
	failStep string
}

// NewDataplane returns the netlink Dataplane for dev. It works in the network
// namespace of the thread that makes each call (slimd's: the host's).
func NewDataplane(dev *Device) Dataplane {
	// The zero Handle opens a socket per request, like the package-level
	// netlink functions.
	return newDataplane(dev, &netlink.Handle{})
}

// newDataplane returns a Dataplane that talks through h, which tests open on
// a netns fd.
func newDataplane(dev *Device, h *netlink.Handle) *netlinkDataplane {
	return &netlinkDataplane{h: h, link: dev.Index, name: dev.Name, cfg: dev.cfg, ensure: EnsureDevice,
		local4: dev.Subnet4, local6: dev.Subnet6}
}

// checkDevice makes the vxlan device again if it is gone (deleted by an
// operator or a script; its neighbour, FDB and route entries went with
// it), and follows its new index: without this every pass would fail on
// the old index for good. It runs at the start of each pass (Peers), which
// then reads an empty device and programs every peer again.
func (d *netlinkDataplane) checkDevice() error {
	if l, err := d.h.LinkByIndex(d.link); err == nil && l.Attrs().Name == d.name && l.Type() == "vxlan" {
		return nil
	}
	if d.cfg.Name == "" || d.ensure == nil {
		return fmt.Errorf("vxlan device %s (index %d) is gone", d.name, d.link)
	}
	dev, err := d.ensure(d.cfg)
	if err != nil {
		return fmt.Errorf("re-create vxlan device %s: %w", d.name, err)
	}
	d.link = dev.Index
	return nil
}

// step is one kernel object of a peer: how to create it exclusively, how to
// replace it, and how to delete it.
type step struct {
	name              string
	what              string // for errors
	add, replace, del func() error
}

// EnsurePeer programs p: neighbour entries, then the FDB entry, then the
// routes, so that the kernel never routes to a gateway it cannot resolve.
// Each object is first added exclusively; if it exists, it is replaced (so a
// drifted object is repaired). If a step fails, the objects this call
// created are deleted again in reverse order; objects that existed before
// (ours already) stay as replaced, and the next pass completes them.
func (d *netlinkDataplane) EnsurePeer(ctx context.Context, p Peer) (err error) {
	if err := p.Validate(); err != nil {
		return err
	}
	p = p.normalize()
	if d.local4.IsValid() && d.local4.Overlaps(p.Subnet4) ||
		d.local6.IsValid() && p.Subnet6.IsValid() && d.local6.Overlaps(p.Subnet6) {
		return fmt.Errorf("%w %s: overlaps the local pod subnet", ErrInvalidPeer, p.label())
	}

	var created []step
	done := false
	defer func() {
		if done {
			return
		}
		for i := len(created) - 1; i >= 0; i-- { // undo in reverse
			if uerr := created[i].del(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo %s: %w", created[i].what, uerr))
			}
		}
	}()
	for _, s := range d.ensureSteps(p) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.failStep == s.name {
			return fmt.Errorf("%s: %w", s.what, errInjected)
		}
		err := s.add()
		if err == nil {
			created = append(created, s)
			continue
		}
		if !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %s: %w", s.what, err)
		}
		if err := s.replace(); err != nil {
			return fmt.Errorf("replace %s: %w", s.what, err)
		}
	}
	done = true
	return nil
}

// ensureSteps lists p's objects in the order they must be created.
func (d *netlinkDataplane) ensureSteps(p Peer) []step {
	h := d.h
	mac := p.VTEPMAC
	neighStep := func(name string, gw netip.Addr) step {
		n := d.neigh(gw, mac)
		return step{
			name:    name,
			what:    fmt.Sprintf("neighbour %s lladdr %s dev %s", gw, mac, d.name),
			add:     func() error { return h.NeighAdd(n) },
			replace: func() error { return h.NeighSet(n) },
			del:     func() error { return d.delNeigh(gw) },
		}
	}
	routeStep := func(name string, dst netip.Prefix, gw netip.Addr) step {
		r := d.route(dst, gw)
		return step{
			name:    name,
			what:    fmt.Sprintf("route %s via %s dev %s", dst, gw, d.name),
			add:     func() error { return h.RouteAdd(r) },
			replace: func() error { return h.RouteReplace(r) },
			del:     func() error { return d.delRoute(dst) },
		}
	}
	fdb := d.fdb(mac, p.UnderlayIP)
	steps := []step{neighStep("neigh4", p.gw4())}
	if p.Subnet6.IsValid() {
		steps = append(steps, neighStep("neigh6", p.gw6()))
	}
	steps = append(steps, step{
		name:    "fdb",
		what:    fmt.Sprintf("fdb %s dst %s dev %s", mac, p.UnderlayIP, d.name),
		add:     func() error { return h.NeighAdd(fdb) },
		replace: func() error { return h.NeighSet(fdb) },
		del:     func() error { return d.delFDB(mac, p.UnderlayIP) },
	})
	steps = append(steps, routeStep("route4", p.Subnet4, p.gw4()))
	if p.Subnet6.IsValid() {
		steps = append(steps, routeStep("route6", p.Subnet6, p.gw6()))
	}
	return steps
}

// RemovePeer removes what p names in the reverse order of EnsurePeer:
// routes, FDB entry, neighbour entries. It stops at the first error (so that
// no route is left pointing at a deleted neighbour). Objects already gone
// count as removed.
func (d *netlinkDataplane) RemovePeer(ctx context.Context, p Peer) error {
	p = p.normalize()
	var ops []func() error
	if p.Subnet6.IsValid() {
		ops = append(ops, func() error { return d.delRoute(p.Subnet6) })
	}
	if p.Subnet4.IsValid() {
		ops = append(ops, func() error { return d.delRoute(p.Subnet4) })
	}
	if p.VTEPMAC != nil && p.UnderlayIP.IsValid() {
		ops = append(ops, func() error { return d.delFDB(p.VTEPMAC, p.UnderlayIP) })
	}
	if p.Subnet6.IsValid() {
		ops = append(ops, func() error { return d.delNeigh(p.gw6()) })
	}
	if p.Subnet4.IsValid() {
		ops = append(ops, func() error { return d.delNeigh(p.gw4()) })
	}
	for _, op := range ops {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := op(); err != nil {
			return err
		}
	}
	return nil
}

// Peers reads our routes, the permanent neighbour entries and the FDB
// entries of the device and joins them into peers (see assemble).
func (d *netlinkDataplane) Peers(ctx context.Context) ([]Peer, error) {
	if err := d.checkDevice(); err != nil {
		return nil, err
	}
	var routes []routeEntry
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := dump(ctx, "routes", func() ([]netlink.Route, error) {
			return d.h.RouteListFiltered(fam,
				&netlink.Route{LinkIndex: d.link, Protocol: RouteProtocol},
				netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			dst, ok := prefixOf(r.Dst)
			if !ok {
				continue // a default route is not a peer's
			}
			routes = append(routes, routeEntry{Dst: dst, Gw: addrOf(r.Gw)})
		}
	}

	var neighs []neighEntry
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := dump(ctx, "neighbours", func() ([]netlink.Neigh, error) {
			return d.h.NeighList(d.link, fam)
		})
		if err != nil {
			return nil, err
		}
		for _, n := range ns {
			// Only permanent entries are ours; the kernel's own (failed
			// resolutions, IPv6 link-local) are not.
			if n.State&netlink.NUD_PERMANENT == 0 || len(n.HardwareAddr) != 6 {
				continue
			}
			neighs = append(neighs, neighEntry{IP: addrOf(n.IP), MAC: n.HardwareAddr})
		}
	}

	fs, err := dump(ctx, "fdb", func() ([]netlink.Neigh, error) {
		return d.h.NeighList(d.link, unix.AF_BRIDGE)
	})
	if err != nil {
		return nil, err
	}
	var fdb []fdbEntry
	for _, f := range fs {
		if f.State&netlink.NUD_PERMANENT == 0 || len(f.HardwareAddr) != 6 || f.IP == nil {
			continue
		}
		fdb = append(fdb, fdbEntry{MAC: f.HardwareAddr, Dst: addrOf(f.IP)})
	}
	return assemble(routes, neighs, fdb), nil
}

func (d *netlinkDataplane) neigh(ip netip.Addr, mac net.HardwareAddr) *netlink.Neigh {
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	return &netlink.Neigh{
		LinkIndex:    d.link,
		Family:       fam,
		State:        netlink.NUD_PERMANENT,
		Type:         unix.RTN_UNICAST,
		IP:           net.IP(ip.AsSlice()),
		HardwareAddr: mac,
	}
}

func (d *netlinkDataplane) fdb(mac net.HardwareAddr, dst netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    d.link,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_PERMANENT,
		Flags:        netlink.NTF_SELF,
		IP:           net.IP(dst.AsSlice()),
		HardwareAddr: mac,
	}
}

func (d *netlinkDataplane) route(dst netip.Prefix, gw netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: d.link,
		Dst:       ipNet(dst),
		Gw:        net.IP(gw.AsSlice()),
		// onlink: the gateway is not in any subnet of the device (it holds
		// only its own /32), but it is reachable on it.
		Flags:    int(netlink.FLAG_ONLINK),
		Scope:    netlink.SCOPE_UNIVERSE,
		Protocol: RouteProtocol,
	}
}

func (d *netlinkDataplane) delNeigh(ip netip.Addr) error {
	n := d.neigh(ip, nil)
	if err := d.h.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete neighbour %s dev %s: %w", ip, d.name, err)
	}
	return nil
}

// delFDB deletes the FDB entry of mac towards dst. The kernel wants the dst
// (an empty NDA_DST is refused), and deletes the whole entry with its last
// destination.
func (d *netlinkDataplane) delFDB(mac net.HardwareAddr, dst netip.Addr) error {
	if err := d.h.NeighDel(d.fdb(mac, dst)); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete fdb %s dst %s dev %s: %w", mac, dst, d.name, err)
	}
	return nil
}

// delRoute deletes our route to dst on the device, whatever its gateway.
// The protocol in the request makes the kernel match only routes we made.
func (d *netlinkDataplane) delRoute(dst netip.Prefix) error {
	r := &netlink.Route{LinkIndex: d.link, Dst: ipNet(dst), Protocol: RouteProtocol}
	// IPv4 reports a missing route as ESRCH, IPv6 as ENOENT.
	if err := d.h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete route %s dev %s: %w", dst, d.name, err)
	}
	return nil
}
