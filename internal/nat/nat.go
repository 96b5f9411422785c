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
// device) and output (connections made by the host itself). Sync rebuilds
// the chains' rules in one netlink batch, which the kernel applies
// atomically, so there is never a moment without rules. Nothing else is
// touched.
//
// The same table holds the control-plane guard (SyncGuard): two filter
// chains, guard_input and guard_forward, and the sets cp_ports and cp_hosts,
// which drop TCP from container interfaces to the store's and slimd's ports
// on this host and on the cluster's other hosts.
package nat

import (
	"errors"
	"net/netip"
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
