package nat

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Table is the slim nftables table in one network namespace.
type Table struct {
	conn *nftables.Conn
}

// New returns the table of the current network namespace, or of the
// namespace whose fd is netnsFD when it is not negative. Without a netns fd
// the netlink socket is opened at each call, in the namespace of the
// calling thread at that time: pass the fd whenever the caller is not
// simply a process living in its namespace.
func New(netnsFD int) (*Table, error) {
	var opts []nftables.ConnOption
	if netnsFD >= 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFD))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &Table{conn: c}, nil
}

func (t *Table) table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

func (t *Table) chains(tb *nftables.Table) []*nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return []*nftables.Chain{
		{Name: "prerouting", Table: tb, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting,
			Priority: nftables.ChainPriorityNATDest, Policy: &accept},
		{Name: "output", Table: tb, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput,
			Priority: nftables.ChainPriorityNATDest, Policy: &accept},
	}
}

// The DNAT maps, one per family: (virtual IP . port) -> (host IP . host
// port). One fixed rule per family and chain looks connections up in them
// (dnat to ip daddr . tcp dport map @dnat4), so a listener is a map
// element, not a rule: a sync touches only the elements that changed, and
// the lookup costs the same with one listener or thousands.
const (
	dnatMap4 = "dnat4"
	dnatMap6 = "dnat6"
)

func (t *Table) maps(tb *nftables.Table) (v4, v6 *nftables.Set) {
	c4 := nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	c6 := nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)
	return &nftables.Set{Table: tb, Name: dnatMap4, IsMap: true, Concatenation: true, KeyType: c4, DataType: c4},
		&nftables.Set{Table: tb, Name: dnatMap6, IsMap: true, Concatenation: true, KeyType: c6, DataType: c6}
}

// Sync makes the DNAT maps hold exactly rules (invalid ones are skipped
// and reported).
func (t *Table) Sync(rules []Rule) error { return syncDNAT(t, rules) }

// elements implements dnatMaps.
func (t *Table) elements() ([]Rule, error) {
	tb := t.table()
	var out []Rule
	for _, name := range []string{dnatMap4, dnatMap6} {
		set, err := t.conn.GetSetByName(tb, name)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // not made yet
			}
			return nil, fmt.Errorf("nftables map %s: %w", name, err)
		}
		elems, err := t.conn.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("nftables map %s elements: %w", name, err)
		}
		for _, e := range elems {
			if r, ok := ruleOf(e); ok {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// apply implements dnatMaps: one batch (re)makes the table, the chains,
// the maps and the lookup rules, and changes the elements, so the kernel
// applies it all at once and the chains are never empty. Rules of older
// versions (one per listener) go with the chains' flush.
func (t *Table) apply(del, add []Rule) error {
	tb := t.conn.AddTable(t.table())
	m4, m6 := t.maps(tb)
	svc := t.svcMap(tb)
	for _, m := range []*nftables.Set{m4, m6, svc} {
		if err := t.conn.AddSet(m, nil); err != nil {
			return fmt.Errorf("nftables map %s: %w", m.Name, err)
		}
	}
	for _, ch := range t.chains(tb) {
		ch = t.conn.AddChain(ch)
		t.conn.FlushChain(ch)
		t.conn.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: lookupExprs(false, m4)})
		t.conn.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: lookupExprs(true, m6)})
		// Services (SyncServices) after the listeners: a service's
		// cluster IP is never a listener's.
		t.conn.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: svcLookupExprs(svc)})
	}
	mapOf := func(r Rule) *nftables.Set {
		if r.VIP.Is4() {
			return m4
		}
		return m6
	}
	for _, r := range del {
		if err := t.conn.SetDeleteElements(mapOf(r), []nftables.SetElement{elementOf(r)}); err != nil {
			return fmt.Errorf("nftables delete %v: %w", r, err)
		}
	}
	for _, r := range add {
		if err := t.conn.SetAddElements(mapOf(r), []nftables.SetElement{elementOf(r)}); err != nil {
			return fmt.Errorf("nftables add %v: %w", r, err)
		}
	}
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("nftables sync: %w", err)
	}
	return nil
}

// Remove deletes the table; absent is fine.
func (t *Table) Remove() error {
	tables, err := t.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nftables list: %w", err)
	}
	for _, tb := range tables {
		if tb.Name == TableName {
			t.conn.DelTable(tb)
			return t.conn.Flush()
		}
	}
	return nil
}

// Rules reads the DNAT map elements back (for tests and status), sorted.
func (t *Table) Rules() ([]Rule, error) {
	rules, err := t.elements()
	sortRules(rules)
	return rules, err
}

// lookupExprs is: meta nfproto ipvX meta l4proto tcp
// dnat ipX to ipX daddr . tcp dport map @dnatX. A concatenation keeps each
// part in its own 32-bit registers: the address from register 1 on, the
// port after it (register 9, NFT_REG32_01, after an IPv4 address;
// register 2, NFT_REG_2, after an IPv6 one); the lookup writes the data
// back the same way.
func lookupExprs(v6 bool, m *nftables.Set) []expr.Any {
	family, daddrOff, alen, portReg := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4), uint32(9)
	if v6 {
		family, daddrOff, alen, portReg = unix.NFPROTO_IPV6, 24, 16, 2
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: alen},
		&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(family), RegAddrMin: 1, RegProtoMin: portReg, Specified: true},
	}
}

// elementOf encodes a rule as a map element: each part of a
// concatenation is padded to 4 bytes.
func elementOf(r Rule) nftables.SetElement {
	return nftables.SetElement{Key: concat(r.VIP, r.Port), Val: concat(r.HostIP, r.HostPort)}
}

func concat(a netip.Addr, port uint16) []byte {
	b := a.AsSlice()
	return append(b, byte(port>>8), byte(port), 0, 0)
}

// ruleOf decodes a map element made by elementOf.
func ruleOf(e nftables.SetElement) (Rule, bool) {
	vip, port, ok1 := split(e.Key)
	hip, hport, ok2 := split(e.Val)
	r := Rule{VIP: vip, Port: port, HostIP: hip, HostPort: hport}
	return r, ok1 && ok2 && r.Valid()
}

func split(b []byte) (netip.Addr, uint16, bool) {
	if len(b) != 8 && len(b) != 20 {
		return netip.Addr{}, 0, false
	}
	a, _ := netip.AddrFromSlice(b[:len(b)-4]) // a v4-mapped IPv6 address stays one
	return a, binaryutil.BigEndian.Uint16(b[len(b)-4:]), true
}
