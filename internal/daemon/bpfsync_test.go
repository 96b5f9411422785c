package daemon

import (
	"errors"
	"maps"
	"net/netip"
	"testing"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
)

// fakeMaps is the address maps in memory; it counts writes so tests can
// assert that a sync touches only what differs.
type fakeMaps struct {
	blocks     map[blockKey]mapAddr
	listeners  map[mapListenerKey]netip.AddrPort
	writes     int
	failPutFor netip.Addr // PutPortBlock for this VIP fails
}

func newFakeMaps() *fakeMaps {
	return &fakeMaps{blocks: map[blockKey]mapAddr{}, listeners: map[mapListenerKey]netip.AddrPort{}}
}

func (m *fakeMaps) PortBlocks() ([]bpf.PortBlock, error) {
	var out []bpf.PortBlock
	for k, v := range m.blocks {
		out = append(out, bpf.PortBlock{HostIP: k.ip.addr(), Start: k.start, VIP: v.addr()})
	}
	return out, nil
}

func (m *fakeMaps) PutPortBlock(ip netip.Addr, start uint16, vip netip.Addr) error {
	if vip == m.failPutFor {
		return errors.New("map full")
	}
	m.writes++
	m.blocks[newBlockKey(ip, start)] = mapAddrOf(vip)
	return nil
}

func (m *fakeMaps) DeletePortBlock(ip netip.Addr, start uint16) error {
	m.writes++
	delete(m.blocks, newBlockKey(ip, start))
	return nil
}

func (m *fakeMaps) Listeners() ([]bpf.Listener, error) {
	var out []bpf.Listener
	for k, v := range m.listeners {
		out = append(out, bpf.Listener{HostIP: k.host.Addr(), HostPort: k.host.Port(), VIP: v, InMap6: k.v6})
	}
	return out, nil
}

func (m *fakeMaps) PutListener(ip netip.Addr, port uint16, vip netip.AddrPort) error {
	m.writes++
	m.listeners[mapListenerKey{netip.AddrPortFrom(ip, port), bpf.IsIPv6(vip.Addr())}] = vip
	return nil
}

func (m *fakeMaps) DeleteListener(ip netip.Addr, port uint16, v6 bool) error {
	m.writes++
	delete(m.listeners, mapListenerKey{netip.AddrPortFrom(ip, port), v6})
	return nil
}

var (
	h1IP = netip.MustParseAddr("192.168.77.1")
	h2IP = netip.MustParseAddr("192.168.77.2")
)

func syncFixture() (map[string]api.Host, map[string]api.Endpoint, map[string]api.Listener) {
	hosts := map[string]api.Host{"h1": {Name: "h1", UnderlayIP: h1IP}, "h2": {Name: "h2", UnderlayIP: h2IP}}
	eps := map[string]api.Endpoint{
		"h1/a": {ContainerID: "a", Host: "h1", IPv4: netip.MustParseAddr("10.244.1.2"), IPv6: netip.MustParseAddr("fd00:0:0:1::2"),
			PortBlocks: []api.PortBlock{{Start: 20480, Size: 256}, {Start: 20736, Size: 256, IPv6: true}}},
		"h2/b": {ContainerID: "b", Host: "h2", IPv4: netip.MustParseAddr("10.244.2.2"),
			PortBlocks: []api.PortBlock{{Start: 20480, Size: 256}}},
		// On a host nobody knows: no entry.
		"h9/c": {ContainerID: "c", Host: "h9", IPv4: netip.MustParseAddr("10.244.9.2"), PortBlocks: []api.PortBlock{{Start: 20480, Size: 256}}},
		// An IPv6 block without an IPv6 address: no entry.
		"h2/d": {ContainerID: "d", Host: "h2", IPv4: netip.MustParseAddr("10.244.2.3"), PortBlocks: []api.PortBlock{{Start: 20992, Size: 256, IPv6: true}}},
	}
	ls := map[string]api.Listener{
		"10.244.2.2/80":    {VIP: netip.MustParseAddr("10.244.2.2"), Port: 80, Host: "h2", HostIP: h2IP, HostPort: 30000},
		"fd00:0:0:2::2/80": {VIP: netip.MustParseAddr("fd00:0:0:2::2"), Port: 80, Host: "h2", HostIP: h2IP, HostPort: 30000},
	}
	return hosts, eps, ls
}

func all[T any](T) bool { return true }

// desiredBPF computes the maps' content from whole copies of the caches,
// as the address index must find it after any sequence of changes: every valid
// endpoint's port blocks on a known host, every valid listener.
func desiredBPF(hosts map[string]api.Host, eps map[string]api.Endpoint, ls map[string]api.Listener,
	validEndpoint func(api.Endpoint) bool, validListener func(api.Listener) bool) bpfState {
	want := bpfState{blocks: map[blockKey]mapAddr{}, listeners: map[mapListenerKey]netip.AddrPort{}}
	for _, ep := range eps {
		h, ok := hosts[ep.Host]
		if !ok || !validEndpoint(ep) {
			continue
		}
		for _, b := range ep.PortBlocks {
			if vip := ep.BlockVIP(b); vip.IsValid() {
				want.blocks[newBlockKey(h.UnderlayIP, b.Start)] = mapAddrOf(vip)
			}
		}
	}
	for _, l := range ls {
		if validListener(l) {
			want.listeners[mapListenerKey{netip.AddrPortFrom(l.HostIP, l.HostPort), bpf.IsIPv6(l.VIP)}] = netip.AddrPortFrom(l.VIP, l.Port)
		}
	}
	return want
}

func TestDesiredBPF(t *testing.T) {
	hosts, eps, ls := syncFixture()
	want := desiredBPF(hosts, eps, ls, all[api.Endpoint], all[api.Listener])
	wantBlocks := map[blockKey]mapAddr{
		newBlockKey(h1IP, 20480): mapAddrOf(netip.MustParseAddr("10.244.1.2")),
		newBlockKey(h1IP, 20736): mapAddrOf(netip.MustParseAddr("fd00:0:0:1::2")),
		newBlockKey(h2IP, 20480): mapAddrOf(netip.MustParseAddr("10.244.2.2")),
	}
	if !maps.Equal(want.blocks, wantBlocks) {
		t.Errorf("blocks = %v, want %v", want.blocks, wantBlocks)
	}
	hp := netip.AddrPortFrom(h2IP, 30000)
	wantL := map[mapListenerKey]netip.AddrPort{
		{hp, false}: netip.MustParseAddrPort("10.244.2.2:80"),
		{hp, true}:  netip.MustParseAddrPort("[fd00:0:0:2::2]:80"),
	}
	if !maps.Equal(want.listeners, wantL) {
		t.Errorf("listeners = %v, want %v", want.listeners, wantL)
	}
	// Refused records are left out.
	none := desiredBPF(hosts, eps, ls,
		func(ep api.Endpoint) bool { return ep.ContainerID != "a" },
		func(l api.Listener) bool { return !l.VIP.Is6() })
	if len(none.blocks) != 1 || len(none.listeners) != 1 {
		t.Errorf("with refusals: %v, %v", none.blocks, none.listeners)
	}
}

func TestApplyBPF(t *testing.T) {
	hosts, eps, ls := syncFixture()
	want := desiredBPF(hosts, eps, ls, all[api.Endpoint], all[api.Listener])
	m := newFakeMaps()
	// Stale entries: a block of a gone endpoint, a block whose VIP
	// changed, a listener in the wrong family's map (older versions).
	m.blocks[newBlockKey(h2IP, 40960)] = mapAddrOf(netip.MustParseAddr("10.244.2.99"))
	m.blocks[newBlockKey(h1IP, 20480)] = mapAddrOf(netip.MustParseAddr("10.244.1.99"))
	wrong := mapListenerKey{netip.AddrPortFrom(h2IP, 30000), true}
	m.listeners[wrong] = netip.MustParseAddrPort("10.244.2.2:80")
	if err := want.apply(m); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(m.blocks, want.blocks) || !maps.Equal(m.listeners, want.listeners) {
		t.Fatalf("after apply: %v %v; want %v %v", m.blocks, m.listeners, want.blocks, want.listeners)
	}
	// In sync: nothing is written.
	m.writes = 0
	if err := want.apply(m); err != nil || m.writes != 0 {
		t.Fatalf("second apply wrote %d entries, %v", m.writes, err)
	}
	// A failed entry is reported; the others are still written.
	delete(eps, "h1/a")
	eps["h2/e"] = api.Endpoint{ContainerID: "e", Host: "h2", IPv4: netip.MustParseAddr("10.244.2.4"), PortBlocks: []api.PortBlock{{Start: 21248, Size: 256}}}
	eps["h2/f"] = api.Endpoint{ContainerID: "f", Host: "h2", IPv4: netip.MustParseAddr("10.244.2.5"), PortBlocks: []api.PortBlock{{Start: 21504, Size: 256}}}
	m.failPutFor = netip.MustParseAddr("10.244.2.4")
	want = desiredBPF(hosts, eps, ls, all[api.Endpoint], all[api.Listener])
	if err := want.apply(m); err == nil {
		t.Fatal("failed put not reported")
	}
	if _, ok := m.blocks[newBlockKey(h2IP, 21504)]; !ok {
		t.Error("a failed entry stopped the others")
	}
	if _, ok := m.blocks[newBlockKey(h1IP, 20480)]; ok {
		t.Error("a gone endpoint's block is still mapped")
	}
}

// mapAddr keeps every address the maps take as it was, without a pointer.
func TestMapAddr(t *testing.T) {
	for _, s := range []string{"10.0.0.1", "0.0.0.0", "fd00::1", "::", "::ffff:10.0.0.1"} {
		a := netip.MustParseAddr(s)
		if got := mapAddrOf(a).addr(); got != a {
			t.Errorf("%s came back as %s", a, got)
		}
	}
	if got := mapAddrOf(netip.Addr{}).addr(); got.IsValid() {
		t.Errorf("the invalid address came back as %s", got)
	}
	if mapAddrOf(netip.MustParseAddr("10.0.0.1")) == mapAddrOf(netip.MustParseAddr("::ffff:10.0.0.1")) {
		t.Error("an IPv4 address and its IPv4-mapped form are one key")
	}
}
