package cni

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	cnins "github.com/containernetworking/cni/pkg/ns"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The kernel side of an attachment. Everything here runs in the namespace of
// the calling thread, the host's, except inside ns.NetNS.Do, which runs its
// function on a thread of its own in the container's namespace. Dumps go
// through netlinksafe, which retries interrupted ones.

// errNotVeth: a link has the name we look for but is not a veth, so we did
// not create it and leave it alone.
var errNotVeth = errors.New("not a veth")

// maxDumpAttempts bounds retries of an interrupted netlink dump, as
// netlinksafe does for the calls it wraps.
const maxDumpAttempts = 5

// checkNetns reports, as a CNI error, whether path is not a network
// namespace, or is the plugin's own (skel checks that only after ADD has
// run).
func checkNetns(path string) error {
	if err := ns.IsNSorErr(path); err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("container netns: %v", err), "")
	}
	own, e := cnins.CheckNetNS(path)
	if e != nil {
		return e
	}
	if own {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("container netns %s is the plugin's own", path), "")
	}
	return nil
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// setup builds the attachment s. On failure it leaves nothing behind.
func setup(s attachSpec, fault func(step) error) (got attached, err error) {
	netns, err := ns.GetNS(s.Netns)
	if err != nil {
		return got, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("container netns: %v", err), "")
	}
	defer netns.Close()

	// Refuse to start over existing links: every link named s.HostIfName or
	// s.IfName after this point is ours, and the rollback may delete it.
	if _, err := netlinksafe.LinkByName(s.HostIfName); err == nil {
		return got, fmt.Errorf("host veth %s already exists: this attachment was added before and not deleted", s.HostIfName)
	} else if !isLinkNotFound(err) {
		return got, fmt.Errorf("look up host veth %s: %w", s.HostIfName, err)
	}

	created, done := false, false
	defer func() {
		// Deleting the host end deletes the pair, and with the container
		// end go its addresses, neighbours and routes.
		if created && !done {
			if rerr := removeHostVeth(s.HostIfName); rerr != nil {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
		}
	}()
	var hostIndex int
	err = netns.Do(func(hostNS ns.NetNS) error {
		if _, err := netlinksafe.LinkByName(s.IfName); err == nil {
			return fmt.Errorf("interface %s already exists in %s", s.IfName, s.Netns)
		} else if !isLinkNotFound(err) {
			return fmt.Errorf("look up %s: %w", s.IfName, err)
		}
		if err := fault(stepVeth); err != nil {
			return err
		}
		// From here on a failure may have left the pair half made.
		created = true
		hostIf, contIf, err := ip.SetupVethWithName(s.IfName, s.HostIfName, s.MTU, "", hostNS)
		if err != nil {
			return fmt.Errorf("create veth %s/%s: %w", s.HostIfName, s.IfName, err)
		}
		hostIndex = hostIf.Index
		got = attached{HostMAC: hostIf.HardwareAddr, ContainerMAC: contIf.HardwareAddr}
		return configureContainer(s, hostIf.HardwareAddr, fault)
	})
	if err != nil {
		return got, err
	}

	if err := fault(stepHost); err != nil {
		return got, err
	}
	// The host side mirrors the container's: a permanent neighbour for each
	// address, so the host never has to resolve it (for IPv6 that would wait
	// for DAD on the host veth's link-local address, a second or two after
	// the link came up), then the route.
	for _, a := range s.addrs() {
		n := &netlink.Neigh{
			LinkIndex:    hostIndex,
			Family:       family(a),
			State:        netlink.NUD_PERMANENT,
			IP:           a.AsSlice(),
			HardwareAddr: got.ContainerMAC,
		}
		if err := netlink.NeighSet(n); err != nil {
			return got, fmt.Errorf("host neighbour %s lladdr %s dev %s: %w", a, got.ContainerMAC, s.HostIfName, err)
		}
		r := &netlink.Route{LinkIndex: hostIndex, Scope: netlink.SCOPE_LINK, Dst: hostPrefix(a)}
		if err := netlink.RouteReplace(r); err != nil {
			return got, fmt.Errorf("host route %s dev %s: %w", a, s.HostIfName, err)
		}
	}
	done = true
	return got, nil
}

// configureContainer sets up the container end, from inside the container's
// namespace.
func configureContainer(s attachSpec, hostMAC net.HardwareAddr, fault func(step) error) error {
	link, err := netlinksafe.LinkByName(s.IfName)
	if err != nil {
		return fmt.Errorf("look up %s: %w", s.IfName, err)
	}
	if err := fault(stepLinkUp); err != nil {
		return err
	}
	// Up before the addresses: IPv6 takes no address on a link that is down
	// (addrconf has not initialised it).
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", s.IfName, err)
	}

	if err := fault(stepAddress); err != nil {
		return err
	}
	for _, a := range s.addrs() {
		addr := &netlink.Addr{IPNet: hostPrefix(a)}
		if a.Is6() {
			// Nothing else can hold this address on a point-to-point
			// link: waiting a second for DAD would only delay the
			// container.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("address %s on %s: %w", a, s.IfName, err)
		}
	}

	gws := []netip.Addr{s.Gateway4}
	if s.IPv6.IsValid() {
		gws = append(gws, s.Gateway6)
	}
	if err := fault(stepNeigh); err != nil {
		return err
	}
	// Neighbours before routes: nobody answers ARP or ND for the gateway,
	// so the kernel must never try to resolve it.
	for _, gw := range gws {
		n := &netlink.Neigh{
			LinkIndex:    link.Attrs().Index,
			Family:       family(gw),
			State:        netlink.NUD_PERMANENT,
			IP:           gw.AsSlice(),
			HardwareAddr: hostMAC,
		}
		if err := netlink.NeighSet(n); err != nil {
			return fmt.Errorf("neighbour %s lladdr %s dev %s: %w", gw, hostMAC, s.IfName, err)
		}
	}

	if err := fault(stepRoutes); err != nil {
		return err
	}
	// The IPv4 gateway is not in any subnet of the container's: an on-link
	// route to it must exist before the default route can use it. The IPv6
	// one is link-local, on-link by definition.
	gw4 := &netlink.Route{LinkIndex: link.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: hostPrefix(s.Gateway4)}
	if err := netlink.RouteReplace(gw4); err != nil {
		return fmt.Errorf("route %s dev %s scope link: %w", s.Gateway4, s.IfName, err)
	}
	for _, gw := range gws {
		if err := ip.AddDefaultRoute(gw.AsSlice(), link); err != nil {
			return fmt.Errorf("default route via %s dev %s: %w", gw, s.IfName, err)
		}
	}
	return nil
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// removeHostVeth deletes the veth named name in the calling thread's
// namespace. An absent link is success; a link of another kind is
// errNotVeth and stays.
func removeHostVeth(name string) error {
	link, err := netlinksafe.LinkByName(name)
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Veth); !ok {
		return fmt.Errorf("%s is a %s: %w", name, link.Type(), errNotVeth)
	}
	return deleteLink(link)
}

// deleteLink deletes link; a link that is already gone is success (the
// kernel removes a veth by itself when its peer's namespace goes away, so
// it may vanish between lookup and delete).
func deleteLink(link netlink.Link) error {
	err := netlink.LinkDel(link)
	if err == nil || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("delete %s: %w", link.Attrs().Name, err)
}

// teardown removes an attachment: the host veth, which takes the container
// end with it, and, if the container's namespace still exists and still has
// a veth named ifName, that one too. Links that are not veths are not ours;
// they are logged and left alone.
func teardown(hostIfName, netnsPath, ifName string, log *slog.Logger) error {
	notOurs := func(err error) error {
		if errors.Is(err, errNotVeth) {
			log.Warn("leaving a link slim-cni did not create", "err", err)
			return nil
		}
		return err
	}
	err := notOurs(removeHostVeth(hostIfName))
	if netnsPath == "" {
		return err
	}
	netns, nerr := ns.GetNS(netnsPath)
	if nerr != nil {
		var gone ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		if errors.As(nerr, &gone) || errors.As(nerr, &notNS) {
			// The namespace is gone, and its interfaces with it.
			return err
		}
		return errors.Join(err, fmt.Errorf("container netns: %w", nerr))
	}
	defer netns.Close()
	cerr := netns.Do(func(ns.NetNS) error { return removeHostVeth(ifName) })
	return errors.Join(err, notOurs(cerr))
}

// removeStaleHostVeths deletes the host veths of slim-cni's naming scheme
// that keep does not name, and returns their names. It touches only veths
// whose peer is in another namespace, as the host end of an attachment's
// always is. It goes on past failures and reports them all.
func removeStaleHostVeths(keep map[string]bool) (removed []string, err error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if !isHostVethName(a.Name) || keep[a.Name] {
			continue
		}
		if _, ok := l.(*netlink.Veth); !ok || a.NetNsID < 0 {
			continue
		}
		if err := deleteLink(l); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, a.Name)
	}
	return removed, errors.Join(errs...)
}

// verify compares an attachment with what the kernel has (CHECK).
func verify(s attachSpec, routes []*types.Route) error {
	host, err := netlinksafe.LinkByName(s.HostIfName)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", s.HostIfName, err)
	}
	if _, ok := host.(*netlink.Veth); !ok {
		return fmt.Errorf("host link %s is a %s, not a veth", s.HostIfName, host.Type())
	}
	hostMAC := host.Attrs().HardwareAddr
	for _, a := range s.addrs() {
		filter := &netlink.Route{Dst: hostPrefix(a), LinkIndex: host.Attrs().Index}
		found, err := netlinksafe.RouteListFiltered(family(a), filter, netlink.RT_FILTER_DST|netlink.RT_FILTER_OIF)
		if err != nil {
			return fmt.Errorf("list host routes: %w", err)
		}
		if len(found) == 0 {
			return fmt.Errorf("host route to %s dev %s is missing", a, s.HostIfName)
		}
	}
	// The container end's MAC, read in its namespace, for the host's
	// neighbour entries.
	var contMAC net.HardwareAddr

	netns, err := ns.GetNS(s.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("container netns: %v", err), "")
	}
	defer netns.Close()
	err = netns.Do(func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(s.IfName)
		if err != nil {
			return fmt.Errorf("container interface %s: %w", s.IfName, err)
		}
		la := link.Attrs()
		if _, ok := link.(*netlink.Veth); !ok {
			return fmt.Errorf("container interface %s is a %s, not a veth", s.IfName, link.Type())
		}
		// A veth's IFLA_LINK is its peer's index in the peer's namespace.
		if la.ParentIndex != host.Attrs().Index {
			return fmt.Errorf("container interface %s is not the peer of host veth %s", s.IfName, s.HostIfName)
		}
		if la.Flags&net.FlagUp == 0 {
			return fmt.Errorf("container interface %s is down", s.IfName)
		}
		contMAC = la.HardwareAddr
		if la.MTU != s.MTU {
			return fmt.Errorf("container interface %s has MTU %d, want %d", s.IfName, la.MTU, s.MTU)
		}
		addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", s.IfName, err)
		}
		gws := []netip.Addr{s.Gateway4}
		for _, a := range s.addrs() {
			want := hostPrefix(a).String()
			if !slices.ContainsFunc(addrs, func(x netlink.Addr) bool { return x.IPNet.String() == want }) {
				return fmt.Errorf("container interface %s lacks address %s", s.IfName, want)
			}
			if a.Is6() {
				gws = append(gws, s.Gateway6)
			}
		}
		for _, gw := range gws {
			if err := hasPermanentNeigh(la.Index, gw, hostMAC); err != nil {
				return fmt.Errorf("container interface %s: %w", s.IfName, err)
			}
		}
		return ip.ValidateExpectedRoute(routes)
	})
	if err != nil {
		return err
	}
	for _, a := range s.addrs() {
		if err := hasPermanentNeigh(host.Attrs().Index, a, contMAC); err != nil {
			return fmt.Errorf("host veth %s: %w", s.HostIfName, err)
		}
	}
	return nil
}

// hasPermanentNeigh checks, in the calling thread's namespace, that link
// linkIndex has a permanent neighbour a with address mac.
func hasPermanentNeigh(linkIndex int, a netip.Addr, mac net.HardwareAddr) error {
	neighs, err := neighList(linkIndex, family(a))
	if err != nil {
		return fmt.Errorf("list neighbours: %w", err)
	}
	ok := slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
		return n.IP.Equal(a.AsSlice()) && n.State&netlink.NUD_PERMANENT != 0 && n.HardwareAddr.String() == mac.String()
	})
	if !ok {
		return fmt.Errorf("no permanent neighbour %s lladdr %s", a, mac)
	}
	return nil
}

// neighList is netlink.NeighList, retried when the dump was interrupted.
func neighList(linkIndex, family int) ([]netlink.Neigh, error) {
	var err error
	for range maxDumpAttempts {
		var neighs []netlink.Neigh
		neighs, err = netlink.NeighList(linkIndex, family)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return neighs, err
		}
	}
	return nil, err
}
