package nat

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Guard is what containers must not open connections to: the control
// plane's TCP ports (the store's client and peer ports, slimd's metrics) on
// this host's own addresses and on the cluster's hosts (and the store's
// members). A container reaches its host's underlay address as any pod
// reaches its node (routed attachment), so without this it could write to
// an unauthenticated store and forge records.
type Guard struct {
	// IfPrefixes name the interfaces container traffic arrives on: the
	// host ends of container veths and the vxlan device (remote
	// containers), by name prefix.
	IfPrefixes []string
	Ports      []uint16
	// Hosts are other hosts' (IPv4) addresses: traffic forwarded there
	// from a container is dropped. Traffic to this host's own addresses
	// is dropped whatever the address.
	Hosts []netip.Addr
}

const (
	guardPorts = "cp_ports"
	guardHosts = "cp_hosts"
)

func (t *Table) guardChains(tb *nftables.Table) []*nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return []*nftables.Chain{
		{Name: "guard_input", Table: tb, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput,
			Priority: nftables.ChainPriorityFilter, Policy: &accept},
		{Name: "guard_forward", Table: tb, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward,
			Priority: nftables.ChainPriorityFilter, Policy: &accept},
	}
}

// fillSet queues, in the current batch, making set and replacing its
// elements with elems.
func (t *Table) fillSet(set *nftables.Set, elems []nftables.SetElement) error {
	if err := t.conn.AddSet(set, nil); err != nil {
		return fmt.Errorf("nftables set %s: %w", set.Name, err)
	}
	t.conn.FlushSet(set)
	if len(elems) > 0 {
		if err := t.conn.SetAddElements(set, elems); err != nil {
			return fmt.Errorf("nftables set %s: %w", set.Name, err)
		}
	}
	return nil
}

// SyncGuard makes the table's guard chains and sets hold exactly g, in one
// atomic batch.
func (t *Table) SyncGuard(g Guard) error {
	if len(g.IfPrefixes) == 0 || slices.Contains(g.IfPrefixes, "") || len(g.Ports) == 0 {
		return fmt.Errorf("guard: interface prefixes and ports are required")
	}
	tb := t.conn.AddTable(t.table())
	ports := &nftables.Set{Table: tb, Name: guardPorts, KeyType: nftables.TypeInetService}
	hosts := &nftables.Set{Table: tb, Name: guardHosts, KeyType: nftables.TypeIPAddr}
	var pe, he []nftables.SetElement
	for _, p := range slices.Compact(slices.Sorted(slices.Values(g.Ports))) {
		pe = append(pe, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)})
	}
	for _, h := range g.Hosts {
		if h.Is4() {
			he = append(he, nftables.SetElement{Key: h.AsSlice()})
		}
	}
	if err := t.fillSet(ports, pe); err != nil {
		return err
	}
	if err := t.fillSet(hosts, he); err != nil {
		return err
	}
	chains := t.guardChains(tb)
	for _, ch := range chains {
		ch = t.conn.AddChain(ch)
		t.conn.FlushChain(ch)
		for _, prefix := range g.IfPrefixes {
			t.conn.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: guardExprs(ch.Name == "guard_forward", prefix, ports, hosts)})
		}
	}
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("nftables guard sync: %w", err)
	}
	return nil
}

// guardExprs is: iifname "PREFIX*" meta l4proto tcp [ip daddr @cp_hosts]
// tcp dport @cp_ports drop (a Cmp on the name's first bytes is a prefix
// match).
func guardExprs(forward bool, prefix string, ports, hosts *nftables.Set) []expr.Any {
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(prefix)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
	if forward {
		exprs = append(exprs,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: hosts.Name, SetID: hosts.ID})
	}
	return append(exprs,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: ports.Name, SetID: ports.ID},
		&expr.Verdict{Kind: expr.VerdictDrop})
}
