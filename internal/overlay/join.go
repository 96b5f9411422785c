package overlay

import (
	"net"
	"net/netip"
	"slices"
)

// The kernel objects of the overlay, reduced to what Peers needs. The netlink
// dataplane dumps them; the test fake keeps them in memory. Both turn them
// into peers with assemble, so the fake reads back exactly what the kernel
// would.
type (
	neighEntry struct {
		IP  netip.Addr
		MAC net.HardwareAddr
	}
	fdbEntry struct {
		MAC net.HardwareAddr
		Dst netip.Addr
	}
	routeEntry struct {
		Dst netip.Prefix
		Gw  netip.Addr
	}
)

// assemble reconstructs peers from our routes, the permanent neighbour
// entries on the device and its FDB entries: route -> gateway neighbour
// (gateway -> MAC) -> FDB (MAC -> underlay IP). An IPv6 route joins the IPv4
// peer whose neighbour has the same MAC.
//
// Nothing of ours is left out, so that Diff can remove it:
//   - a route whose gateway has no neighbour entry gives a peer without MAC;
//     a route whose gateway is not its subnet's address (not one we wrote)
//     gives a peer without MAC as well, so that it differs from any desired
//     peer and gets rewritten;
//   - an IPv6 route that joins no IPv4 peer gives a peer with only Subnet6;
//   - a neighbour entry that no route uses (a peer half removed or half added
//     before a crash, or a route deleted by hand) gives a peer whose subnet
//     is the gateway's host route (/32 or /128); Peer.Validate refuses host
//     routes, so it never matches a desired peer;
//   - an FDB entry that no peer uses gives a peer with only MAC and underlay IP.
//
// The result is sorted by key.
func assemble(routes []routeEntry, neighs []neighEntry, fdb []fdbEntry) []Peer {
	neighByIP := make(map[netip.Addr]net.HardwareAddr, len(neighs))
	for _, n := range neighs {
		neighByIP[n.IP.Unmap()] = n.MAC
	}
	dstByMAC := make(map[string]netip.Addr, len(fdb))
	for _, f := range fdb {
		if _, dup := dstByMAC[string(f.MAC)]; !dup { // a second remote of a MAC is not ours
			dstByMAC[string(f.MAC)] = f.Dst.Unmap()
		}
	}

	routes = slices.Clone(routes)
	slices.SortFunc(routes, func(a, b routeEntry) int {
		return compareKeys(peerKey{prefix: a.Dst}, peerKey{prefix: b.Dst})
	})
	var peers []Peer
	usedNeigh := make(map[netip.Addr]bool)
	v4ByMAC := make(map[string]int)
	for _, r := range routes {
		if !r.Dst.Addr().Is4() {
			continue
		}
		p := Peer{Subnet4: r.Dst.Masked()}
		if gw := r.Gw.Unmap(); gw == p.Subnet4.Addr() {
			if mac, ok := neighByIP[gw]; ok {
				p.VTEPMAC = mac
				usedNeigh[gw] = true
			}
		}
		if _, dup := v4ByMAC[string(p.VTEPMAC)]; p.VTEPMAC != nil && !dup {
			v4ByMAC[string(p.VTEPMAC)] = len(peers)
		}
		peers = append(peers, p)
	}
	for _, r := range routes {
		if !r.Dst.Addr().Is6() {
			continue
		}
		dst := r.Dst.Masked()
		var mac net.HardwareAddr
		if r.Gw == dst.Addr() {
			if m, ok := neighByIP[r.Gw]; ok {
				mac = m
				usedNeigh[r.Gw] = true
			}
		}
		if i, ok := v4ByMAC[string(mac)]; ok && mac != nil && !peers[i].Subnet6.IsValid() {
			peers[i].Subnet6 = dst
			continue
		}
		peers = append(peers, Peer{Subnet6: dst, VTEPMAC: mac})
	}

	neighs = slices.Clone(neighs)
	slices.SortFunc(neighs, func(a, b neighEntry) int { return a.IP.Unmap().Compare(b.IP.Unmap()) })
	for _, n := range neighs {
		ip := n.IP.Unmap()
		if usedNeigh[ip] {
			continue
		}
		usedNeigh[ip] = true
		p := Peer{VTEPMAC: n.MAC}
		if ip.Is4() {
			p.Subnet4 = netip.PrefixFrom(ip, 32)
		} else {
			p.Subnet6 = netip.PrefixFrom(ip, 128)
		}
		peers = append(peers, p)
	}

	usedMAC := make(map[string]bool)
	for i := range peers {
		if m := peers[i].VTEPMAC; m != nil {
			if dst, ok := dstByMAC[string(m)]; ok {
				peers[i].UnderlayIP = dst
				usedMAC[string(m)] = true
			}
		}
	}
	for _, f := range fdb {
		if !usedMAC[string(f.MAC)] {
			usedMAC[string(f.MAC)] = true
			peers = append(peers, Peer{VTEPMAC: f.MAC, UnderlayIP: f.Dst.Unmap()})
		}
	}
	slices.SortFunc(peers, comparePeers)
	return peers
}
