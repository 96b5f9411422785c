package policy

import (
	"cmp"
	"net/netip"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
)

// Addressed is an endpoint with its addresses, as Filter takes them.
type Addressed struct {
	Endpoint *Endpoint
	Addrs    []netip.Addr
}

// Allow is one thing an isolated endpoint allows, in address and port
// ranges a packet filter can match: traffic between the endpoint's
// address Local and any address of Peer (for ingress the source, for
// egress the destination), of protocol Proto to destination ports
// First-Last. An empty Proto allows every protocol and port (ICMP
// included), as a rule without ports does.
type Allow struct {
	Local       netip.Addr
	Peer        netip.Prefix
	Proto       Protocol
	First, Last uint16
}

// Filter is what a host's packet filter needs to enforce the policies on
// its own endpoints: the addresses isolated in each direction, and
// everything they allow. Traffic of an isolated address that no Allow
// matches is dropped; replies to allowed connections are the filter's
// (connection tracking) business.
type Filter struct {
	IsolatedIngress, IsolatedEgress []netip.Addr
	Ingress, Egress                 []Allow
}

// Filter compiles the policies for a packet filter that guards the local
// endpoints, with all the cluster's endpoints (local ones included) for
// the selectors. Selector peers become the matching endpoints' addresses,
// ipBlocks their CIDR without the excepts, named ports the port the
// destination endpoint gives the name (an ingress rule's on the local
// endpoint, an egress rule's on each peer endpoint; a peer that is no
// endpoint resolves none). Its verdicts are Decide's: a test checks the
// two agree.
func (s *Set) Filter(local, all []Addressed) Filter {
	var f Filter
	if s == nil {
		return f
	}
	for _, l := range local {
		for _, dir := range []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress} {
			rules, isolated := s.rulesFor(dir, l.Endpoint)
			if !isolated {
				continue
			}
			var allows []Allow
			for _, a := range l.Addrs {
				a = a.Unmap()
				for _, r := range rules {
					allows = append(allows, s.allows(dir, r, a, l.Endpoint, all)...)
				}
			}
			if dir == networkingv1.PolicyTypeIngress {
				f.IsolatedIngress = append(f.IsolatedIngress, unmapAll(l.Addrs)...)
				f.Ingress = append(f.Ingress, allows...)
			} else {
				f.IsolatedEgress = append(f.IsolatedEgress, unmapAll(l.Addrs)...)
				f.Egress = append(f.Egress, allows...)
			}
		}
	}
	for _, l := range [][]netip.Addr{f.IsolatedIngress, f.IsolatedEgress} {
		slices.SortFunc(l, netip.Addr.Compare)
	}
	f.IsolatedIngress, f.IsolatedEgress = slices.Compact(f.IsolatedIngress), slices.Compact(f.IsolatedEgress)
	f.Ingress, f.Egress = sortAllows(f.Ingress), sortAllows(f.Egress)
	return f
}

// scopedRule is a rule with the namespace of its policy (where a
// podSelector alone selects).
type scopedRule struct {
	*rule
	ns string
}

// rulesFor is the rules of the policies that select e and isolate dir.
func (s *Set) rulesFor(dir networkingv1.PolicyType, e *Endpoint) ([]scopedRule, bool) {
	var rules []scopedRule
	isolated := false
	for c, rs := range s.selecting(dir, e) {
		isolated = true
		for i := range rs {
			rules = append(rules, scopedRule{&rs[i], c.namespace})
		}
	}
	return rules, isolated
}

// peerRange is a peer of a rule as addresses, with its endpoint (nil for
// an ipBlock) for named ports.
type peerRange struct {
	prefix netip.Prefix
	ep     *Endpoint
}

// allows compiles one rule for the local address a of endpoint e.
func (s *Set) allows(dir networkingv1.PolicyType, r scopedRule, a netip.Addr, e *Endpoint, all []Addressed) []Allow {
	var peers []peerRange
	if len(r.peers) == 0 {
		peers = append(peers, peerRange{prefix: netip.PrefixFrom(zeroOf(a), 0)})
	}
	for i := range r.peers {
		p := &r.peers[i]
		if p.block != nil {
			for _, pr := range subtract(p.block.cidr, p.block.except) {
				peers = append(peers, peerRange{prefix: pr})
			}
			continue
		}
		for _, o := range all {
			if !s.peerMatches(p, r.ns, o.Endpoint, netip.Addr{}) {
				continue
			}
			for _, oa := range o.Addrs {
				oa = oa.Unmap()
				peers = append(peers, peerRange{prefix: netip.PrefixFrom(oa, oa.BitLen()), ep: o.Endpoint})
			}
		}
	}
	var out []Allow
	for _, pr := range peers {
		if pr.prefix.Addr().Is4() != a.Is4() {
			continue
		}
		if len(r.ports) == 0 {
			out = append(out, Allow{Local: a, Peer: pr.prefix})
			continue
		}
		dst := e // ingress: named ports resolve on the local endpoint
		if dir == networkingv1.PolicyTypeEgress {
			dst = pr.ep
		}
		for _, pt := range r.ports {
			switch {
			case pt.name != "" && dst != nil:
				for _, np := range dst.Ports {
					if np.Name == pt.name && protocolOr(np.Protocol) == pt.proto {
						out = append(out, Allow{Local: a, Peer: pr.prefix, Proto: pt.proto, First: np.Port, Last: np.Port})
					}
				}
			case pt.name != "":
				// An egress rule's address range (all peers, an ipBlock)
				// naming a port: it resolves on each endpoint in the
				// range, one address at a time.
				for _, o := range all {
					for _, oa := range o.Addrs {
						if oa = oa.Unmap(); !pr.prefix.Contains(oa) {
							continue
						}
						for _, np := range o.Endpoint.Ports {
							if np.Name == pt.name && protocolOr(np.Protocol) == pt.proto {
								out = append(out, Allow{Local: a, Peer: netip.PrefixFrom(oa, oa.BitLen()), Proto: pt.proto, First: np.Port, Last: np.Port})
							}
						}
					}
				}
			case pt.lo == 0:
				out = append(out, Allow{Local: a, Peer: pr.prefix, Proto: pt.proto, First: 0, Last: 65535})
			default:
				out = append(out, Allow{Local: a, Peer: pr.prefix, Proto: pt.proto, First: pt.lo, Last: pt.hi})
			}
		}
	}
	return out
}

func zeroOf(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func unmapAll(as []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, len(as))
	for i, a := range as {
		out[i] = a.Unmap()
	}
	return out
}

func sortAllows(as []Allow) []Allow {
	slices.SortFunc(as, func(a, b Allow) int {
		return cmp.Or(a.Local.Compare(b.Local), a.Peer.Addr().Compare(b.Peer.Addr()), cmp.Compare(a.Peer.Bits(), b.Peer.Bits()),
			cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.First, b.First), cmp.Compare(a.Last, b.Last))
	})
	return slices.Compact(as)
}

// subtract is p without the except prefixes, as disjoint prefixes: p is
// halved around each except until the halves are either inside one (and
// dropped) or clear of all.
func subtract(p netip.Prefix, except []netip.Prefix) []netip.Prefix {
	p = p.Masked()
	overlaps := false
	for _, e := range except {
		if e.Bits() <= p.Bits() && e.Contains(p.Addr()) {
			return nil // p lies inside e
		}
		if p.Overlaps(e) {
			overlaps = true
		}
	}
	if !overlaps {
		return []netip.Prefix{p}
	}
	lo, hi := halves(p)
	return append(subtract(lo, except), subtract(hi, except)...)
}

// halves splits p (not a single address) into its two halves.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	b := p.Addr().AsSlice()
	b[(bits-1)/8] |= 0x80 >> ((bits - 1) % 8)
	hiAddr, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(hiAddr, bits)
}

// LastAddr is the last address of p (a filter's range end).
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
