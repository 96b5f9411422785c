package overlay

import (
	"net"
	"net/netip"
	"slices"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

// peer builds a peer from "subnet4 underlay mac [subnet6]".
func peer(host, subnet4, underlay, m string, subnet6 ...string) Peer {
	p := Peer{Host: host, VTEPMAC: mac(m)}
	if subnet4 != "" {
		p.Subnet4 = pfx(subnet4)
	}
	if underlay != "" {
		p.UnderlayIP = addr(underlay)
	}
	if len(subnet6) > 0 {
		p.Subnet6 = pfx(subnet6[0])
	}
	return p
}

// withoutHosts returns ps normalized, Host cleared, sorted: the form Peers
// reports.
func withoutHosts(ps []Peer) []Peer {
	out := make([]Peer, 0, len(ps))
	for _, p := range ps {
		p = p.normalize()
		p.Host = ""
		out = append(out, p)
	}
	slices.SortFunc(out, comparePeers)
	return out
}

func samePeers(a, b []Peer) bool {
	a, b = withoutHosts(a), withoutHosts(b)
	return slices.EqualFunc(a, b, func(x, y Peer) bool { return sameKernelState(x, y) })
}

func peersString(ps []Peer) string {
	s := ""
	for _, p := range ps {
		s += "\n\t" + p.String()
	}
	if s == "" {
		return " (none)"
	}
	return s
}
