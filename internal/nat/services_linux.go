package nat

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Service is one service port for clients the fast path does not carry
// (UDP, overlay-only containers): packets to VIP:Port over Proto are
// DNAT'd to one of Backends, picked at random per connection.
type Service struct {
	VIP   netip.Addr
	Proto uint8 // unix.IPPROTO_TCP or unix.IPPROTO_UDP
	Port  uint16
	// Backends are where a connection may go: a backend's virtual address
	// and target port (its host DNATs it on if it listens on the fast
	// path), or, for a backend listening on this host, its host listener
	// itself (a second DNAT on this host would not happen).
	Backends []netip.AddrPort
}

const (
	// svcMap4 is the services' verdict map: daddr . l4proto . dport ->
	// goto the service port's chain.
	svcMap4 = "svc4"
	// svcChainPrefix names a service port's chain: svc_<vip>_<proto>_<port>.
	svcChainPrefix = "svc_"
	// svcEmpty4 holds the service ports without a backend (daddr .
	// l4proto . dport); chain svc_reject refuses connections to them.
	svcEmpty4 = "svc_empty4"
	svcReject = "svc_reject"
)

// svcKeyType is the type of svcKey: ipv4_addr . inet_proto . inet_service.
var svcKeyType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)

func svcChain(s Service) string {
	return fmt.Sprintf("%s%s_%d_%d", svcChainPrefix, s.VIP, s.Proto, s.Port)
}

func (t *Table) svcMap(tb *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: tb, Name: svcMap4, IsMap: true, Concatenation: true,
		KeyType:  svcKeyType,
		DataType: nftables.TypeVerdict}
}

// svcLookupExprs is: meta nfproto ipv4 ip daddr . meta l4proto . th dport
// vmap @svc4 (in the NAT chains, after the listener lookups).
func svcLookupExprs(m *nftables.Set) []expr.Any {
	return append(svcKeyExprs(), &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: m.Name, SetID: m.ID})
}

// svcKeyExprs load an IPv4 packet's service key (svcKey) into registers
// 1, 9 and 10: ip daddr . meta l4proto . th dport.
func svcKeyExprs() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// SyncServices makes the service map and chains hold exactly svcs (IPv4
// only), in one batch the kernel applies at once. A port without backends
// is refused instead (a TCP reset, or ICMP port unreachable), so a client
// fails at once rather than waiting for a timeout. Each service port's
// chain holds one rule,
//
//	dnat ip to numgen random mod N map { 0 : backend0, ... }
//
// so the rules do not grow with the number of services a packet passes.
func (t *Table) SyncServices(svcs []Service) error {
	tb := t.conn.AddTable(t.table())
	m := t.svcMap(tb)
	if err := t.conn.AddSet(m, nil); err != nil {
		return fmt.Errorf("nftables map %s: %w", m.Name, err)
	}
	t.conn.FlushSet(m)
	want := map[string]Service{}
	var empty []nftables.SetElement
	for _, s := range svcs {
		if !s.VIP.Is4() || (s.Proto != unix.IPPROTO_TCP && s.Proto != unix.IPPROTO_UDP) {
			continue
		}
		if len(s.Backends) == 0 {
			empty = append(empty, nftables.SetElement{Key: svcKey(s)})
			continue
		}
		want[svcChain(s)] = s
	}
	if err := t.syncServiceReject(tb, empty); err != nil {
		return err
	}
	chains, err := t.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nftables list chains: %w", err)
	}
	for _, ch := range chains {
		if _, keep := want[ch.Name]; ch.Table.Name == TableName && strings.HasPrefix(ch.Name, svcChainPrefix) && !keep {
			t.conn.FlushChain(ch)
			t.conn.DelChain(ch)
		}
	}
	var elems []nftables.SetElement
	for _, name := range slices.Sorted(maps.Keys(want)) {
		s := want[name]
		ch := t.conn.AddChain(&nftables.Chain{Name: name, Table: tb})
		t.conn.FlushChain(ch)
		backends := &nftables.Set{Table: tb, Anonymous: true, Constant: true, IsMap: true,
			KeyType: nftables.TypeInteger, DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
		var be []nftables.SetElement
		for i, b := range s.Backends {
			be = append(be, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)), Val: concat(b.Addr(), b.Port())})
		}
		if err := t.conn.AddSet(backends, be); err != nil {
			return fmt.Errorf("nftables backends of %s: %w", name, err)
		}
		t.conn.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
			&expr.Numgen{Register: 1, Modulus: uint32(len(s.Backends)), Type: unix.NFT_NG_RANDOM},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: backends.Name, SetID: backends.ID},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9, Specified: true},
		}})
		elems = append(elems, nftables.SetElement{Key: svcKey(s), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: name}})
	}
	if err := t.conn.SetAddElements(m, elems); err != nil {
		return fmt.Errorf("nftables service map: %w", err)
	}
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("nftables services sync: %w", err)
	}
	return nil
}

// svcKey is a service port as the map and the set key it: daddr .
// l4proto . dport, each part padded to 4 bytes.
func svcKey(s Service) []byte {
	key := append(s.VIP.AsSlice(), s.Proto, 0, 0, 0)
	return append(key, byte(s.Port>>8), byte(s.Port), 0, 0)
}

// syncServiceReject queues, in the current batch, the set of service
// ports without backends and chain svc_reject (hooks forward and output):
//
//	meta nfproto ipv4 ip daddr . meta l4proto . th dport @svc_empty4 meta l4proto tcp reject with tcp reset
//	meta nfproto ipv4 ip daddr . meta l4proto . th dport @svc_empty4 reject with icmpx port-unreachable
func (t *Table) syncServiceReject(tb *nftables.Table, empty []nftables.SetElement) error {
	set := &nftables.Set{Table: tb, Name: svcEmpty4, Concatenation: true,
		KeyType: svcKeyType}
	if err := t.fillSet(set, empty); err != nil {
		return err
	}
	match := append(svcKeyExprs(), &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID})
	accept := nftables.ChainPolicyAccept
	for _, hook := range []struct {
		name string
		hook *nftables.ChainHook
	}{{svcReject + "_fwd", nftables.ChainHookForward}, {svcReject + "_out", nftables.ChainHookOutput}} {
		ch := t.conn.AddChain(&nftables.Chain{Name: hook.name, Table: tb, Type: nftables.ChainTypeFilter, Hooknum: hook.hook,
			Priority: nftables.ChainPriorityFilter, Policy: &accept})
		t.conn.FlushChain(ch)
		t.conn.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: slices.Concat(match, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Counter{},
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
		})})
		t.conn.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: slices.Concat(match, []expr.Any{
			&expr.Counter{},
			&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH},
		})})
	}
	return nil
}
