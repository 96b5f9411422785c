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

// HostPorts says who may open connections to this host's fast-path
// listener ports, which sit on the underlay address where any machine of
// that network could reach them. A fast-path client's host socket comes
// from a cluster host's underlay address and a port of a block the store
// assigned to one of that host's endpoints; the block names the client,
// so ingress policy holds here too. Overlay clients DNAT'd to a listener
// are not this filter's business (chain policy checked them before the
// DNAT), nor are ports that are no local listener's.
type HostPorts struct {
	// Open are the host ports of listeners any fast-path client may
	// reach: from a host of Hosts, source port in First-Last.
	Open        []uint16
	Hosts       []netip.Addr
	First, Last uint16
	// Guarded are the host ports of listeners isolated for ingress: only
	// the sources of Allow reach them. A source in a block of Known that
	// Allow leaves out gets a reset; one from a host of Hosts and a port
	// of First-Last in no known block is dropped instead: most likely its
	// block was claimed a moment ago and its record has not reached this
	// host yet, and the client's SYN, sent again after a second, passes
	// once it has.
	Guarded []uint16
	Allow   []HostPortAllow
	Known   []HostPortBlock
	// Slimd is slimd's cgroup. Fast-path host sockets are made by slimd
	// and charged to its cgroup for good (whatever process holds them
	// later), so a connection this host opens from a port of First-Last
	// out of another cgroup is some other process borrowing a port of
	// the blocks, which name containers: it gets a reset. Zero: no such
	// check.
	Slimd Cgroup
}

// Cgroup is a cgroup v2 by id (its directory's inode) and level (its
// depth below the root), as nftables' socket cgroupv2 match takes it.
type Cgroup struct {
	ID    uint64
	Level uint32
}

// HostPortBlock is a port block of a host, First-Last.
type HostPortBlock struct {
	Host        netip.Addr
	First, Last uint16
}

// HostPortAllow lets a port block of a host reach listener port Port.
type HostPortAllow struct {
	Port        uint16
	Host        netip.Addr
	First, Last uint16
}

const (
	hostPortsChain = "hostports"
	fpOpen         = "fp_open"
	fpGuarded      = "fp_guarded"
	fpHosts        = "fp_hosts"
	fpAllow        = "fp_allow"
	fpKnown        = "fp_known"
)

// SyncHostPorts makes the host-port chains and sets hold exactly hp, in
// one atomic batch:
//
//	chain hostports { type filter hook input priority filter
//	    ct state established,related accept
//	    ct status dnat accept
//	    meta l4proto tcp tcp dport @fp_open goto fp_open
//	    meta l4proto tcp tcp dport @fp_guarded goto fp_guarded
//	chain fp_open { meta nfproto ipv4 ip saddr @fp_hosts tcp sport First-Last accept; reject with tcp reset }
//	chain fp_guarded { meta nfproto ipv4 tcp dport . ip saddr . tcp sport @fp_allow accept
//	    meta nfproto ipv4 ip saddr . tcp sport @fp_known reject with tcp reset
//	    meta nfproto ipv4 ip saddr @fp_hosts tcp sport First-Last drop
//	    reject with tcp reset }
//
// A refused connection gets a reset: the client fails at once. The one
// exception is a guarded port's SYN from a block not known yet (see
// HostPorts.Guarded).
func (t *Table) SyncHostPorts(hp HostPorts) error {
	tb := t.conn.AddTable(t.table())
	open := &nftables.Set{Table: tb, Name: fpOpen, KeyType: nftables.TypeInetService}
	guarded := &nftables.Set{Table: tb, Name: fpGuarded, KeyType: nftables.TypeInetService}
	hosts := &nftables.Set{Table: tb, Name: fpHosts, KeyType: nftables.TypeIPAddr}
	allow := &nftables.Set{Table: tb, Name: fpAllow, Concatenation: true, Interval: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeInetService, nftables.TypeIPAddr, nftables.TypeInetService)}
	known := &nftables.Set{Table: tb, Name: fpKnown, Concatenation: true, Interval: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
	port := func(p uint16) []byte { return []byte{byte(p >> 8), byte(p), 0, 0} }
	var oe, ge, he, ae, ke []nftables.SetElement
	for _, p := range hp.Open {
		oe = append(oe, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)})
	}
	for _, p := range hp.Guarded {
		ge = append(ge, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)})
	}
	for _, h := range hp.Hosts {
		if h.Is4() {
			he = append(he, nftables.SetElement{Key: h.AsSlice()})
		}
	}
	for _, a := range hp.Allow {
		if a.Host.Is4() && a.First <= a.Last {
			k := append(port(a.Port), a.Host.AsSlice()...)
			ae = append(ae, nftables.SetElement{Key: append(k, port(a.First)...), KeyEnd: append(k[:8:8], port(a.Last)...)})
		}
	}
	for _, b := range hp.Known {
		if b.Host.Is4() && b.First <= b.Last {
			ke = append(ke, nftables.SetElement{Key: append(b.Host.AsSlice(), port(b.First)...),
				KeyEnd: append(b.Host.AsSlice(), port(b.Last)...)})
		}
	}
	for _, s := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{{open, dedupe(oe)}, {guarded, dedupe(ge)}, {hosts, dedupe(he)}, {allow, ae}, {known, ke}} {
		if err := t.fillSet(s.set, s.elems); err != nil {
			return err
		}
	}
	accept := nftables.ChainPolicyAccept
	base := t.conn.AddChain(&nftables.Chain{Name: hostPortsChain, Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	t.conn.FlushChain(base)
	accepted := &expr.Verdict{Kind: expr.VerdictAccept}
	t.conn.AddRule(&nftables.Rule{Table: tb, Chain: base, Exprs: append(ctAny(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accepted)})
	t.conn.AddRule(&nftables.Rule{Table: tb, Chain: base, Exprs: append(ctAny(expr.CtKeySTATUS, 1<<5 /* IPS_DST_NAT */), accepted)})
	reject := []expr.Any{&expr.Counter{}, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
	ipv4 := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
	// From a cluster host, a source port of the blocks' range.
	clusterHostBlockPort := append(slices.Clone(ipv4),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: hosts.Name, SetID: hosts.ID},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: binaryutil.BigEndian.PutUint16(hp.First)},
		&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: binaryutil.BigEndian.PutUint16(hp.Last)})
	for _, c := range []struct {
		set   *nftables.Set
		rules [][]expr.Any
	}{
		{open, [][]expr.Any{append(slices.Clone(clusterHostBlockPort), accepted), reject}},
		{guarded, [][]expr.Any{
			append(slices.Clone(ipv4),
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
				&expr.Lookup{SourceRegister: 1, SetName: allow.Name, SetID: allow.ID},
				accepted),
			slices.Concat(ipv4, []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
				&expr.Lookup{SourceRegister: 1, SetName: known.Name, SetID: known.ID},
			}, reject),
			append(slices.Clone(clusterHostBlockPort), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}),
			reject}},
	} {
		ch := t.conn.AddChain(&nftables.Chain{Name: c.set.Name, Table: tb})
		t.conn.FlushChain(ch)
		for _, r := range c.rules {
			t.conn.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: r})
		}
		t.conn.AddRule(&nftables.Rule{Table: tb, Chain: base, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: c.set.Name, SetID: c.set.ID},
			&expr.Verdict{Kind: expr.VerdictGoto, Chain: ch.Name},
		}})
	}
	// chain fp_spoof { type filter hook output priority filter
	//     meta l4proto tcp ct state new tcp sport First-Last
	//         socket cgroupv2 level L != slimd counter reject with tcp reset
	spoof := t.conn.AddChain(&nftables.Chain{Name: "fp_spoof", Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	t.conn.FlushChain(spoof)
	if hp.Slimd.ID != 0 && hp.First <= hp.Last && hp.First != 0 {
		t.conn.AddRule(&nftables.Rule{Table: tb, Chain: spoof, Exprs: slices.Concat([]expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		}, ctAny(expr.CtKeySTATE, expr.CtStateBitNEW), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
			&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: binaryutil.BigEndian.PutUint16(hp.First)},
			&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: binaryutil.BigEndian.PutUint16(hp.Last)},
			&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: hp.Slimd.Level, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint64(hp.Slimd.ID)},
			&expr.Counter{},
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
		})})
	}
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("nftables host ports sync: %w", err)
	}
	return nil
}

// ctAny matches a packet whose conntrack key (state or status) has any
// of bits set.
func ctAny(key expr.CtKey, bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: key, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// dedupe drops repeated keys (a set refuses a batch adding one twice).
func dedupe(es []nftables.SetElement) []nftables.SetElement {
	seen := map[string]bool{}
	out := es[:0]
	for _, e := range es {
		if !seen[string(e.Key)] {
			seen[string(e.Key)] = true
			out = append(out, e)
		}
	}
	return out
}
