package overlay

import "testing"

func TestDiff(t *testing.T) {
	const (
		m1 = "02:53:c0:a8:01:01"
		m2 = "02:53:c0:a8:01:02"
		m3 = "02:53:c0:a8:01:03"
	)
	a := peer("a", "10.244.1.0/24", "192.168.1.1", m1)
	b := peer("b", "10.244.2.0/24", "192.168.1.2", m2)
	a6 := peer("a", "10.244.1.0/24", "192.168.1.1", m1, "fd5a:11:0:1::/64")
	noHost := func(p Peer) Peer { p.Host = ""; return p }

	tests := []struct {
		name            string
		desired, actual []Peer
		ensure, remove  []Peer
	}{
		{name: "empty"},
		{name: "add", desired: []Peer{b, a}, ensure: []Peer{a, b}},
		{name: "in place, host ignored", desired: []Peer{a, b}, actual: []Peer{noHost(b), noHost(a)}},
		{name: "unnormalized desired equals kernel form",
			desired: []Peer{peer("a", "10.244.1.7/24", "::ffff:192.168.1.1", m1)}, actual: []Peer{noHost(a)}},
		{name: "remove", desired: []Peer{a}, actual: []Peer{a, b}, remove: []Peer{b}},
		{name: "remove all", actual: []Peer{a, b}, remove: []Peer{a, b}},
		{name: "underlay changed: fdb replaced in place",
			desired: []Peer{peer("a", "10.244.1.0/24", "192.168.9.9", m1)}, actual: []Peer{a},
			ensure: []Peer{peer("a", "10.244.1.0/24", "192.168.9.9", m1)}},
		{name: "mac changed: old fdb entry removed, route kept",
			desired: []Peer{peer("a", "10.244.1.0/24", "192.168.1.1", m3)}, actual: []Peer{a},
			ensure: []Peer{peer("a", "10.244.1.0/24", "192.168.1.1", m3)},
			remove: []Peer{{VTEPMAC: mac(m1), UnderlayIP: addr("192.168.1.1")}}},
		{name: "ipv6 added", desired: []Peer{a6}, actual: []Peer{a}, ensure: []Peer{a6}},
		{name: "ipv6 dropped: only its route and neighbour removed",
			desired: []Peer{a}, actual: []Peer{a6}, ensure: []Peer{a},
			remove: []Peer{{Subnet6: pfx("fd5a:11:0:1::/64")}}},
		{name: "ipv6 changed",
			desired: []Peer{peer("a", "10.244.1.0/24", "192.168.1.1", m1, "fd5a:11:0:9::/64")}, actual: []Peer{a6},
			ensure: []Peer{peer("a", "10.244.1.0/24", "192.168.1.1", m1, "fd5a:11:0:9::/64")},
			remove: []Peer{{Subnet6: pfx("fd5a:11:0:1::/64")}}},
		{name: "fdb entry missing", desired: []Peer{a},
			actual: []Peer{{Subnet4: a.Subnet4, VTEPMAC: a.VTEPMAC}}, ensure: []Peer{a}},
		{name: "neighbour missing", desired: []Peer{a}, actual: []Peer{{Subnet4: a.Subnet4}}, ensure: []Peer{a}},
		{name: "subnet re-leased with the same mac",
			desired: []Peer{peer("a", "10.244.7.0/24", "192.168.1.1", m1)}, actual: []Peer{a},
			ensure: []Peer{peer("a", "10.244.7.0/24", "192.168.1.1", m1)}, remove: []Peer{a}},
		{name: "removal shares the mac of a peer in place: re-ensured",
			desired: []Peer{b}, actual: []Peer{peer("", "10.244.9.0/24", "192.168.1.2", m2), b},
			ensure: []Peer{b}, remove: []Peer{peer("", "10.244.9.0/24", "192.168.1.2", m2)}},
		{name: "leftover neighbour of a peer whose route is gone",
			desired: []Peer{b}, actual: []Peer{{Subnet4: pfx("10.244.2.0/32"), VTEPMAC: b.VTEPMAC, UnderlayIP: b.UnderlayIP}},
			ensure: []Peer{b}, remove: []Peer{{Subnet4: pfx("10.244.2.0/32"), VTEPMAC: b.VTEPMAC, UnderlayIP: b.UnderlayIP}}},
		{name: "ipv6 route without neighbour did not join its peer",
			desired: []Peer{a6}, actual: []Peer{noHost(a), {Subnet6: pfx("fd5a:11:0:1::/64")}},
			ensure: []Peer{a6}, remove: []Peer{{Subnet6: pfx("fd5a:11:0:1::/64")}}},
		{name: "leftover fdb entry",
			desired: []Peer{a}, actual: []Peer{a, {VTEPMAC: mac(m3), UnderlayIP: addr("192.168.1.3")}},
			remove: []Peer{{VTEPMAC: mac(m3), UnderlayIP: addr("192.168.1.3")}}},
		{name: "mac moves to another host",
			desired: []Peer{peer("a", "10.244.1.0/24", "192.168.1.1", m3), peer("b", "10.244.2.0/24", "192.168.1.2", m1)},
			actual:  []Peer{a, b},
			ensure:  []Peer{peer("a", "10.244.1.0/24", "192.168.1.1", m3), peer("b", "10.244.2.0/24", "192.168.1.2", m1)},
			remove: []Peer{
				{VTEPMAC: mac(m1), UnderlayIP: addr("192.168.1.1")},
				{VTEPMAC: mac(m2), UnderlayIP: addr("192.168.1.2")},
			}},
		{name: "duplicate subnet: first wins",
			desired: []Peer{a, peer("a2", "10.244.1.0/24", "192.168.1.9", m3)}, ensure: []Peer{a}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ensure, remove := Diff(tt.desired, tt.actual)
			if !samePeers(ensure, tt.ensure) || len(ensure) != len(tt.ensure) {
				t.Errorf("ensure:%s\nwant:%s", peersString(ensure), peersString(tt.ensure))
			}
			if !samePeers(remove, tt.remove) || len(remove) != len(tt.remove) {
				t.Errorf("remove:%s\nwant:%s", peersString(remove), peersString(tt.remove))
			}
			// Applying the diff to a kernel that holds actual yields desired.
			f := newFake()
			seedFake(f, tt.actual)
			for _, p := range remove {
				_ = f.RemovePeer(t.Context(), p)
			}
			for _, p := range ensure {
				if err := f.EnsurePeer(t.Context(), p); err != nil {
					t.Fatal(err)
				}
			}
			want, _ := Diff(tt.desired, nil) // deduplicated desired
			if got := f.state(); !samePeers(got, want) {
				t.Errorf("after applying: kernel holds%s\nwant%s", peersString(got), peersString(want))
			}
		})
	}
}

func TestDiffSorted(t *testing.T) {
	var desired []Peer
	for _, s := range []string{"10.244.10.0/24", "10.244.2.0/24", "10.1.0.0/16", "10.244.2.0/23"} {
		desired = append(desired, Peer{Subnet4: pfx(s)})
	}
	ensure, _ := Diff(desired, nil)
	var got []string
	for _, p := range ensure {
		got = append(got, p.Subnet4.String())
	}
	want := []string{"10.1.0.0/16", "10.244.2.0/23", "10.244.2.0/24", "10.244.10.0/24"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

// seedFake puts the kernel objects of ps, which may be partial, into f.
func seedFake(f *fakeDataplane, ps []Peer) {
	for _, p := range ps {
		p = p.normalize()
		gw4, gw6 := p.gw4(), p.gw6()
		if p.VTEPMAC != nil {
			if gw4.IsValid() {
				f.neigh[gw4] = p.VTEPMAC
			}
			if gw6.IsValid() {
				f.neigh[gw6] = p.VTEPMAC
			}
			if p.UnderlayIP.IsValid() {
				f.fdb[string(p.VTEPMAC)] = p.UnderlayIP
			}
		}
		// Host routes stand for leftover neighbours, not routes.
		if p.Subnet4.IsValid() && p.Subnet4.Bits() < 32 {
			f.routes[p.Subnet4] = gw4
		}
		if p.Subnet6.IsValid() && p.Subnet6.Bits() < 128 {
			f.routes[p.Subnet6] = gw6
		}
	}
}
