package nat

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/policy"
)

// Network policy for routed (overlay) traffic. One base chain, before
// DNAT (so it sees the virtual destination an overlay client dialled),
// passes replies of tracked connections and sends a packet of an isolated
// endpoint through its direction's check; the checks look the packet up
// in sets keyed by addresses, so the rules are a fixed dozen however many
// endpoints and policies there are:
//
//	chain policy { type filter hook prerouting priority mangle
//	    ct state established,related accept
//	    ip saddr @pol_iso_eg4 jump pol_eg4     (and ip6, and ingress by daddr)
//	chain pol_eg4 {
//	    ip saddr . ip daddr . meta l4proto . th dport @pol_eg4 return
//	    ip saddr . ip daddr @pol_eg4_any return
//	    counter drop
//
// The allow sets are intervals over (local address, peer range, protocol,
// port range): what policy.Filter compiles. A rule without ports allows
// every protocol, ICMP included (the _any sets).

const policyChain = "policy"

// polSets are the sets and the check chain of one family and direction.
type polSets struct {
	v6, ingress bool
	iso         *nftables.Set // isolated local addresses
	ports, any  *nftables.Set // allows with and without ports
	chain       string
}

func (t *Table) polSets(tb *nftables.Table) []polSets {
	var out []polSets
	for _, v6 := range []bool{false, true} {
		addr, fam := nftables.TypeIPAddr, "4"
		if v6 {
			addr, fam = nftables.TypeIP6Addr, "6"
		}
		for _, ingress := range []bool{true, false} {
			dir := "eg"
			if ingress {
				dir = "in"
			}
			name := "pol_" + dir + fam
			out = append(out, polSets{v6: v6, ingress: ingress, chain: name,
				iso: &nftables.Set{Table: tb, Name: "pol_iso_" + dir + fam, KeyType: addr},
				ports: &nftables.Set{Table: tb, Name: name, Concatenation: true, Interval: true,
					KeyType: nftables.MustConcatSetType(addr, addr, nftables.TypeInetProto, nftables.TypeInetService)},
				any: &nftables.Set{Table: tb, Name: name + "_any", Concatenation: true, Interval: true,
					KeyType: nftables.MustConcatSetType(addr, addr)},
			})
		}
	}
	return out
}

// SyncPolicy makes the policy chains and sets hold exactly f, in one
// atomic batch: the kernel switches from the old verdicts to the new ones
// at once, with no moment of an empty set.
func (t *Table) SyncPolicy(f policy.Filter) error {
	tb := t.conn.AddTable(t.table())
	accept := nftables.ChainPolicyAccept
	base := t.conn.AddChain(&nftables.Chain{Name: policyChain, Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept})
	t.conn.FlushChain(base)
	t.conn.AddRule(&nftables.Rule{Table: tb, Chain: base,
		Exprs: append(ctAny(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), &expr.Verdict{Kind: expr.VerdictAccept})})
	for _, ps := range t.polSets(tb) {
		iso, allows := f.IsolatedEgress, f.Egress
		if ps.ingress {
			iso, allows = f.IsolatedIngress, f.Ingress
		}
		var isoElems, portElems, anyElems []nftables.SetElement
		for _, a := range iso {
			if a.Is6() == ps.v6 {
				isoElems = append(isoElems, nftables.SetElement{Key: a.AsSlice()})
			}
		}
		for _, a := range allows {
			if a.Local.Is6() != ps.v6 || a.Peer.Addr().Is6() != ps.v6 {
				continue
			}
			lo, hi := a.Peer.Masked().Addr(), policy.LastAddr(a.Peer)
			if a.Proto == "" {
				anyElems = append(anyElems, nftables.SetElement{Key: cat(a.Local, lo), KeyEnd: cat(a.Local, hi)})
				continue
			}
			p, ok := a.Proto.Number()
			if !ok {
				continue
			}
			portElems = append(portElems, nftables.SetElement{
				Key: append(cat(a.Local, lo), p, 0, 0, 0, byte(a.First>>8), byte(a.First), 0, 0), KeyEnd: append(cat(a.Local, hi), p, 0, 0, 0, byte(a.Last>>8), byte(a.Last), 0, 0)})
		}
		for _, err := range []error{t.fillSet(ps.iso, isoElems), t.fillSet(ps.ports, portElems), t.fillSet(ps.any, anyElems)} {
			if err != nil {
				return err
			}
		}
		check := t.conn.AddChain(&nftables.Chain{Name: ps.chain, Table: tb})
		t.conn.FlushChain(check)
		local, peer := srcOff(ps.v6), dstOff(ps.v6)
		if ps.ingress {
			local, peer = peer, local
		}
		alen, peerReg, protoReg, portReg := uint32(4), uint32(9), uint32(10), uint32(11)
		family := byte(unix.NFPROTO_IPV4)
		if ps.v6 {
			alen, peerReg, protoReg, portReg = 16, 2, 16, 17
			family = unix.NFPROTO_IPV6
		}
		ret := &expr.Verdict{Kind: expr.VerdictReturn}
		t.conn.AddRule(&nftables.Rule{Table: tb, Chain: check, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: local, Len: alen},
			&expr.Payload{DestRegister: peerReg, Base: expr.PayloadBaseNetworkHeader, Offset: peer, Len: alen},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoReg},
			&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: ps.ports.Name, SetID: ps.ports.ID},
			ret,
		}})
		t.conn.AddRule(&nftables.Rule{Table: tb, Chain: check, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: local, Len: alen},
			&expr.Payload{DestRegister: peerReg, Base: expr.PayloadBaseNetworkHeader, Offset: peer, Len: alen},
			&expr.Lookup{SourceRegister: 1, SetName: ps.any.Name, SetID: ps.any.ID},
			ret,
		}})
		t.conn.AddRule(&nftables.Rule{Table: tb, Chain: check, Exprs: []expr.Any{
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
		t.conn.AddRule(&nftables.Rule{Table: tb, Chain: base, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: local, Len: alen},
			&expr.Lookup{SourceRegister: 1, SetName: ps.iso.Name, SetID: ps.iso.ID},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: ps.chain},
		}})
	}
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("nftables policy sync: %w", err)
	}
	return nil
}

func srcOff(v6 bool) uint32 {
	if v6 {
		return 8
	}
	return 12
}

func dstOff(v6 bool) uint32 {
	if v6 {
		return 24
	}
	return 16
}

// cat is two addresses as the first parts of a concatenation (each
// 4-byte aligned already).
func cat(a, b netip.Addr) []byte { return append(a.AsSlice(), b.AsSlice()...) }
