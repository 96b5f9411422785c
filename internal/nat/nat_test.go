package nat

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// fakeMaps is the DNAT maps in memory; it keeps each apply's changes.
type fakeMaps struct {
	elems    map[netip.AddrPort]Rule
	applies  int
	del, add []Rule
	fail     error
}

func (f *fakeMaps) elements() ([]Rule, error) {
	var out []Rule
	for _, r := range f.elems {
		out = append(out, r)
	}
	return out, nil
}

func (f *fakeMaps) apply(del, add []Rule) error {
	if f.fail != nil {
		return f.fail
	}
	f.applies++
	f.del, f.add = del, add
	for _, r := range del {
		delete(f.elems, r.key())
	}
	for _, r := range add {
		if _, dup := f.elems[r.key()]; dup {
			return errors.New("element exists") // as the kernel answers
		}
		f.elems[r.key()] = r
	}
	return nil
}

func rule(vip string, port uint16, hostIP string, hostPort uint16) Rule {
	return Rule{VIP: netip.MustParseAddr(vip), Port: port, HostIP: netip.MustParseAddr(hostIP), HostPort: hostPort}
}

func TestSyncDNAT(t *testing.T) {
	f := &fakeMaps{elems: map[netip.AddrPort]Rule{}}
	web := rule("10.244.1.2", 80, "192.168.77.1", 30000)
	web6 := rule("fd00:0:0:1::2", 80, "::ffff:192.168.77.1", 30000)
	db := rule("10.244.1.3", 5432, "192.168.77.1", 30001)
	if err := syncDNAT(f, []Rule{web, web6, db}); err != nil {
		t.Fatal(err)
	}
	if len(f.elems) != 3 || len(f.add) != 3 || len(f.del) != 0 {
		t.Fatalf("first sync: %d elements, added %v, deleted %v", len(f.elems), f.add, f.del)
	}
	// Unchanged: nothing added or deleted (the batch still re-asserts the
	// table, chains and lookup rules).
	if err := syncDNAT(f, []Rule{db, web6, web}); err != nil || len(f.add) != 0 || len(f.del) != 0 {
		t.Fatalf("same rules again: added %v, deleted %v, %v", f.add, f.del, err)
	}
	// A listener moved to another host port: its element is replaced; one
	// gone is deleted; the others are left alone.
	moved := rule("10.244.1.2", 80, "192.168.77.1", 30005)
	if err := syncDNAT(f, []Rule{moved, web6}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.del, []Rule{web, db}) || !slices.Equal(f.add, []Rule{moved}) {
		t.Fatalf("after a move and a removal: deleted %v, added %v", f.del, f.add)
	}
	if f.elems[moved.key()] != moved || len(f.elems) != 2 {
		t.Fatalf("elements %v", f.elems)
	}
	// Invalid and duplicate rules are reported, the valid ones applied.
	bad := rule("10.244.1.4", 80, "fd00::1", 1) // mixed families
	dup := rule("10.244.1.2", 80, "192.168.77.1", 30009)
	err := syncDNAT(f, []Rule{moved, web6, bad, dup, db})
	if err == nil {
		t.Fatal("invalid and duplicate rules not reported")
	}
	if f.elems[moved.key()] != moved || f.elems[db.key()] != db || len(f.elems) != 3 {
		t.Fatalf("after a partly bad sync: %v", f.elems)
	}
	// A failing batch is an error and changes nothing.
	f.fail = errors.New("netlink: operation not permitted")
	if err := syncDNAT(f, nil); !errors.Is(err, f.fail) || len(f.elems) != 3 {
		t.Fatalf("failed apply: %v, %d elements", err, len(f.elems))
	}
}
