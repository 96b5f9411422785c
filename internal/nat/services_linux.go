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
)

func svcChain(s Service) string {
	return fmt.Sprintf("%s%s_%d_%d", svcChainPrefix, s.VIP, s.Proto, s.Port)
}

func (t *Table) svcMap(tb *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: tb, Name: svcMap4, IsMap: true, Concatenation: true,
		KeyType:  nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService),
		DataType: nftables.TypeVerdict}
}

// svcLookupExprs is: meta nfproto ipv4 ip daddr . meta l4proto . th dport
// vmap @svc4 (in the NAT chains, after the listener lookups).
func svcLookupExprs(m *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
	}
}

// SyncServices makes the service map and chains hold exactly svcs (IPv4;
// others, and ports without backends, are left out: their packets are
// not translated), in one batch the kernel applies at once. Each service
// port's chain holds one rule,
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
	for _, s := range svcs {
		if s.VIP.Is4() && len(s.Backends) > 0 && (s.Proto == unix.IPPROTO_TCP || s.Proto == unix.IPPROTO_UDP) {
			want[svcChain(s)] = s
		}
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
		key := append(s.VIP.AsSlice(), s.Proto, 0, 0, 0)
		key = append(key, byte(s.Port>>8), byte(s.Port), 0, 0)
		elems = append(elems, nftables.SetElement{Key: key, VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: name}})
	}
	if err := t.conn.SetAddElements(m, elems); err != nil {
		return fmt.Errorf("nftables service map: %w", err)
	}
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("nftables services sync: %w", err)
	}
	return nil
}
