package overlay

import (
	"bytes"
	"net/netip"
	"slices"
)

// Diff computes what to change so that the kernel, which holds actual, holds
// desired instead. It is pure.
//
// ensure holds the desired peers that are missing or differ from the
// kernel. remove holds the peers that are no longer desired (keyed by
// Subnet4) and, for a peer that changed, only its parts that EnsurePeer
// would not overwrite: the FDB entry of a VTEP MAC that is no longer used,
// the route and neighbour entry of an IPv6 subnet that is no longer used.
// Such partial peers have no Subnet4, and RemovePeer removes only what they
// name. Changing a peer therefore never removes its IPv4 route, and its
// traffic keeps flowing.
//
// Apply remove before ensure: a removal takes its neighbour entries and its
// FDB entry with it, and where a desired peer shares one of those (the same
// VTEP MAC, or the same gateway address), Diff puts that peer in ensure even
// if it is otherwise in place, so that it is re-created right after. With
// that order one pass always converges.
//
// Host is ignored in comparisons (the kernel does not store it). Diff does
// not validate; callers drop invalid peers first (Reconciler does). Of
// several desired peers with the same Subnet4, the first wins. Both results
// are sorted by subnet.
func Diff(desired, actual []Peer) (ensure, remove []Peer) {
	want := make(map[peerKey]Peer, len(desired))
	var order []peerKey
	for _, d := range desired {
		d = d.normalize()
		k := keyOf(d)
		if _, dup := want[k]; dup {
			continue
		}
		want[k] = d
		order = append(order, k)
	}
	have := make(map[peerKey]Peer, len(actual))
	for _, a := range actual {
		a = a.normalize()
		have[keyOf(a)] = a
	}

	ensured := make(map[peerKey]bool)
	for _, k := range order {
		d := want[k]
		a, ok := have[k]
		switch {
		case !ok:
			ensure = append(ensure, d)
			ensured[k] = true
		case !sameKernelState(a, d):
			ensure = append(ensure, d)
			ensured[k] = true
			if s, ok := staleParts(a, d); ok {
				remove = append(remove, s)
			}
		}
	}
	for k, a := range have {
		if _, ok := want[k]; !ok {
			remove = append(remove, a)
		}
	}

	if len(remove) > 0 {
		macs := make(map[string]bool)
		gws := make(map[netip.Addr]bool)
		for _, r := range remove {
			if r.VTEPMAC != nil {
				macs[string(r.VTEPMAC)] = true
			}
			for _, gw := range []netip.Addr{r.gw4(), r.gw6()} {
				if gw.IsValid() {
					gws[gw] = true
				}
			}
		}
		for _, k := range order {
			d := want[k]
			if ensured[k] {
				continue
			}
			if macs[string(d.VTEPMAC)] || gws[d.gw4()] || (d.Subnet6.IsValid() && gws[d.gw6()]) {
				ensure = append(ensure, d)
				ensured[k] = true
			}
		}
	}

	slices.SortFunc(ensure, comparePeers)
	slices.SortFunc(remove, comparePeers)
	return ensure, remove
}

// staleParts returns the objects of the kernel's peer a that EnsurePeer(d)
// leaves behind, and whether there are any.
func staleParts(a, d Peer) (Peer, bool) {
	var s Peer
	if a.VTEPMAC != nil && !bytes.Equal(a.VTEPMAC, d.VTEPMAC) {
		s.VTEPMAC = a.VTEPMAC
		s.UnderlayIP = a.UnderlayIP
	}
	if a.Subnet6.IsValid() && a.Subnet6 != d.Subnet6 {
		s.Subnet6 = a.Subnet6
	}
	return s, s.VTEPMAC != nil || s.Subnet6.IsValid()
}
