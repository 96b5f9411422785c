package nat

import (
	"cmp"
	"fmt"
	"slices"

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

// Sync makes the table hold exactly rules (invalid ones are skipped and
// reported). Table and chains are created if missing; the chains' rules
// are replaced in the same atomic batch.
func (t *Table) Sync(rules []Rule) error {
	rules = slices.Clone(rules)
	slices.SortFunc(rules, func(a, b Rule) int {
		return cmp.Or(a.VIP.Compare(b.VIP), cmp.Compare(a.Port, b.Port))
	})
	var bad []Rule
	tb := t.conn.AddTable(t.table())
	for _, ch := range t.chains(tb) {
		ch = t.conn.AddChain(ch)
		t.conn.FlushChain(ch)
		for _, r := range rules {
			if !r.Valid() {
				if ch.Name == "prerouting" {
					bad = append(bad, r)
				}
				continue
			}
			t.conn.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: dnatExprs(r)})
		}
	}
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("nftables sync: %w", err)
	}
	if len(bad) > 0 {
		return fmt.Errorf("skipped %d invalid DNAT rules (first %+v)", len(bad), bad[0])
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

// Rules reads the DNAT rules back (for tests and status).
func (t *Table) Rules() ([]Rule, error) {
	tb := t.table()
	var out []Rule
	rules, err := t.conn.GetRules(tb, &nftables.Chain{Name: "prerouting", Table: tb})
	if err != nil {
		return nil, fmt.Errorf("nftables rules: %w", err)
	}
	for _, r := range rules {
		if rule, ok := parseRule(r.Exprs); ok {
			out = append(out, rule)
		}
	}
	return out, nil
}

// dnatExprs is: meta nfproto ipvX, meta l4proto tcp, ip daddr VIP,
// tcp dport Port, dnat to HostIP:HostPort.
func dnatExprs(r Rule) []expr.Any {
	family, daddrOff, alen := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if !r.VIP.Is4() {
		family, daddrOff, alen = unix.NFPROTO_IPV6, 24, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: alen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: r.VIP.AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(r.Port)},
		&expr.Immediate{Register: 1, Data: r.HostIP.AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(r.HostPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(family), RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

// parseRule recognises rules made by dnatExprs.
func parseRule(exprs []expr.Any) (Rule, bool) {
	var r Rule
	var cmps [][]byte
	var imms [][]byte
	for _, e := range exprs {
		switch v := e.(type) {
		case *expr.Cmp:
			cmps = append(cmps, v.Data)
		case *expr.Immediate:
			imms = append(imms, v.Data)
		}
	}
	if len(cmps) != 4 || len(imms) != 2 || len(cmps[3]) != 2 || len(imms[1]) != 2 {
		return r, false
	}
	var ok bool
	if r.VIP, ok = addrFrom(cmps[2]); !ok {
		return r, false
	}
	if r.HostIP, ok = addrFrom(imms[0]); !ok {
		return r, false
	}
	r.Port = binaryutil.BigEndian.Uint16(cmps[3])
	r.HostPort = binaryutil.BigEndian.Uint16(imms[1])
	return r, r.Valid()
}
