// Package nat keeps the nftables DNAT rules that let clients which are not
// on the fast path reach fast-path listeners. A container whose listen()
// was swapped has no socket on its virtual address any more: its listener
// is a host socket on (host IP, host port). Containers without Slim, and
// any connection the broker declined, still send to virtual IP:port; they
// arrive at the listener's host (containers are routed, so every packet
// crosses the host's netfilter) and a DNAT rule there sends them to the
// host listener. Replies are translated back by conntrack.
//
// The package owns one table, "slim" in the inet family, with two NAT
// chains: prerouting (packets from local containers and from the vxlan
// device) and output (connections made by the host itself). Each chain
// holds one rule per family that looks the destination up in a map,
// dnat4 or dnat6: (virtual IP . port) -> (host IP . host port). A
// listener is a map element; Sync changes only the elements that differ,
// in one netlink batch, which the kernel applies atomically. Nothing else
// is touched.
//
// Services (SyncServices) add a verdict map, svc4 (daddr . l4proto .
// dport -> goto the service port's chain), looked up after the listeners
// in both NAT chains, and one chain per service port that DNATs to a
// backend picked by numgen random.
//
// The same table holds the control-plane guard (SyncGuard): two filter
// chains, guard_input and guard_forward, and the sets cp_ports and cp_hosts,
// which drop TCP from container interfaces to the store's and slimd's ports
// on this host and on the cluster's other hosts.
package nat

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// TableName is the nftables table this package owns.
const TableName = "slim"

// ErrNotSupported is returned where nftables is not available.
var ErrNotSupported = errors.New("nftables not supported")

// Rule sends TCP to VIP:Port on to HostIP:HostPort. VIP and HostIP are of
// the same family.
type Rule struct {
	VIP      netip.Addr
	Port     uint16
	HostIP   netip.Addr
	HostPort uint16
}

// Valid reports whether the rule can be programmed.
func (r Rule) Valid() bool {
	return r.VIP.IsValid() && r.HostIP.IsValid() && r.VIP.Is4() == r.HostIP.Is4() && r.Port != 0 && r.HostPort != 0
}

// key is what a DNAT map is keyed by.
func (r Rule) key() netip.AddrPort { return netip.AddrPortFrom(r.VIP, r.Port) }

// dnatMaps is the kernel side of Sync: the nftables table, or a fake in
// tests.
type dnatMaps interface {
	// elements reads the maps' elements.
	elements() ([]Rule, error)
	// apply deletes del and adds add, and (re)makes the table, its
	// chains, the maps and the lookup rules, all in one atomic batch.
	apply(del, add []Rule) error
}

// syncDNAT makes m hold exactly the valid rules of rules, touching only
// the elements that differ. Invalid rules, and a second rule for a
// virtual address and port already taken, are skipped and reported.
func syncDNAT(m dnatMaps, rules []Rule) error {
	want := make(map[netip.AddrPort]Rule, len(rules))
	var bad []Rule
	for _, r := range rules {
		if _, dup := want[r.key()]; dup || !r.Valid() {
			bad = append(bad, r)
			continue
		}
		want[r.key()] = r
	}
	have, err := m.elements()
	if err != nil {
		return err
	}
	var del, add []Rule
	for _, h := range have {
		if w, ok := want[h.key()]; ok && w == h {
			delete(want, h.key())
			continue
		}
		del = append(del, h) // gone, or pointing elsewhere now
	}
	for _, w := range want {
		add = append(add, w)
	}
	sortRules(del)
	sortRules(add)
	if err := m.apply(del, add); err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("skipped %d invalid or duplicate DNAT rules (first %+v)", len(bad), bad[0])
	}
	return nil
}

func sortRules(rules []Rule) {
	slices.SortFunc(rules, func(a, b Rule) int {
		return cmp.Or(a.VIP.Compare(b.VIP), cmp.Compare(a.Port, b.Port))
	})
}
