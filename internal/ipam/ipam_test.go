package ipam

import (
	"errors"
	"math/big"
	"net/netip"
	"testing"
)

func mustPlan(t *testing.T, c4 string, b4 int, c6 string, b6 int) Plan {
	t.Helper()
	p := Plan{Cluster4: netip.MustParsePrefix(c4), HostBits4: b4, HostBits6: b6}
	if c6 != "" {
		p.Cluster6 = netip.MustParsePrefix(c6)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlanValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Plan
		ok   bool
	}{
		{"default", Plan{Cluster4: netip.MustParsePrefix("10.244.0.0/16"), HostBits4: 24}, true},
		{"dual", Plan{Cluster4: netip.MustParsePrefix("10.244.0.0/16"), HostBits4: 24, Cluster6: netip.MustParsePrefix("fd00::/48"), HostBits6: 64}, true},
		{"v6 as v4", Plan{Cluster4: netip.MustParsePrefix("fd00::/48"), HostBits4: 64}, false},
		{"host bits set", Plan{Cluster4: netip.MustParsePrefix("10.244.1.0/16"), HostBits4: 24}, false},
		{"host smaller than cluster", Plan{Cluster4: netip.MustParsePrefix("10.244.0.0/16"), HostBits4: 8}, false},
		{"host too small", Plan{Cluster4: netip.MustParsePrefix("10.244.0.0/16"), HostBits4: 31}, false},
		{"v4 in v6 slot", Plan{Cluster4: netip.MustParsePrefix("10.244.0.0/16"), HostBits4: 24, Cluster6: netip.MustParsePrefix("10.0.0.0/8"), HostBits6: 24}, false},
		{"v6 subnet smaller", Plan{Cluster4: netip.MustParsePrefix("10.0.0.0/8"), HostBits4: 16, Cluster6: netip.MustParsePrefix("fd00::/100"), HostBits6: 120}, false},
		{"zero", Plan{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.p.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestSlots(t *testing.T) {
	p := mustPlan(t, "10.244.0.0/16", 24, "fd5a:11::/48", 64)
	if got := p.Slots(); got != 256 {
		t.Fatalf("Slots = %d, want 256", got)
	}
	v4, v6, err := p.Slot(3)
	if err != nil {
		t.Fatal(err)
	}
	if v4.String() != "10.244.3.0/24" || v6.String() != "fd5a:11:0:3::/64" {
		t.Fatalf("Slot(3) = %v %v", v4, v6)
	}
	if p.SlotOf(v4) != 3 {
		t.Fatalf("SlotOf(%v) = %d", v4, p.SlotOf(v4))
	}
	for _, bad := range []string{"10.245.0.0/24", "10.244.3.0/25", "10.244.3.1/24"} {
		if got := p.SlotOf(netip.MustParsePrefix(bad)); got != -1 {
			t.Errorf("SlotOf(%s) = %d, want -1", bad, got)
		}
	}
	if _, _, err := p.Slot(256); err == nil {
		t.Fatal("Slot(256) succeeded")
	}
	small := mustPlan(t, "10.0.0.0/30", 30, "", 0)
	if small.Slots() != 1 {
		t.Fatalf("small Slots = %d", small.Slots())
	}
	if _, err := small.FreeSlot(map[int]bool{0: true}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("FreeSlot on a full plan = %v", err)
	}
	if i, _ := p.FreeSlot(map[int]bool{0: true, 1: true, 3: true}); i != 2 {
		t.Fatalf("FreeSlot = %d, want 2", i)
	}
}

func TestNextFree(t *testing.T) {
	sub := netip.MustParsePrefix("10.244.1.0/29") // .1 - .6 usable
	used := map[netip.Addr]bool{}
	var last netip.Addr
	var got []string
	for range 6 {
		a, err := NextFree(sub, used, last)
		if err != nil {
			t.Fatal(err)
		}
		used[a] = true
		last = a
		got = append(got, a.String())
	}
	want := []string{"10.244.1.1", "10.244.1.2", "10.244.1.3", "10.244.1.4", "10.244.1.5", "10.244.1.6"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("allocation order %v, want %v", got, want)
		}
	}
	if _, err := NextFree(sub, used, last); !errors.Is(err, ErrExhausted) {
		t.Fatalf("full subnet: %v", err)
	}
	// Release .2 and .5: round robin after .6 wraps to .2 first.
	delete(used, netip.MustParseAddr("10.244.1.2"))
	delete(used, netip.MustParseAddr("10.244.1.5"))
	a, _ := NextFree(sub, used, last)
	if a.String() != "10.244.1.2" {
		t.Fatalf("after wrap got %v", a)
	}
	a, _ = NextFree(sub, used, netip.MustParseAddr("10.244.1.3"))
	if a.String() != "10.244.1.5" {
		t.Fatalf("round robin got %v", a)
	}
}

func TestPair(t *testing.T) {
	s4 := netip.MustParsePrefix("10.244.3.0/24")
	s6 := netip.MustParsePrefix("fd5a:11:0:3::/64")
	if got := Pair(netip.MustParseAddr("10.244.3.17"), s4, s6); got.String() != "fd5a:11:0:3::11" {
		t.Fatalf("Pair = %v", got)
	}
	if got := Pair(netip.MustParseAddr("10.244.3.17"), s4, netip.Prefix{}); got.IsValid() {
		t.Fatalf("Pair without v6 = %v", got)
	}
	if Gateway(s4).String() != "10.244.3.0" {
		t.Fatal("gateway")
	}
}

func FuzzNextFree(f *testing.F) {
	f.Add(uint32(0x0af40100), 24, uint32(5))
	f.Fuzz(func(t *testing.T, base uint32, bits int, lastOff uint32) {
		if bits < 8 || bits > 30 {
			return
		}
		b := [4]byte{byte(base >> 24), byte(base >> 16), byte(base >> 8), byte(base)}
		sub := netip.PrefixFrom(netip.AddrFrom4(b), bits).Masked()
		last := addOffset(sub.Addr(), offsetBig(lastOff))
		a, err := NextFree(sub, map[netip.Addr]bool{}, last)
		if err != nil {
			t.Fatal(err)
		}
		if !sub.Contains(a) || a == sub.Addr() {
			t.Fatalf("NextFree(%v) = %v", sub, a)
		}
	})
}

func offsetBig(v uint32) *big.Int { return new(big.Int).SetUint64(uint64(v)) }
