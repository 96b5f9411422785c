package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/nat"
)

func TestDNATRules(t *testing.T) {
	ls := map[string]api.Listener{
		"a": {VIP: netip.MustParseAddr("10.244.1.5"), Port: 80, Host: "h1", HostIP: h1IP, HostPort: 30000},
		"b": {VIP: netip.MustParseAddr("fd00:0:0:1::5"), Port: 80, Host: "h1", HostIP: h1IP, HostPort: 30000},
		"c": {VIP: netip.MustParseAddr("10.244.2.5"), Port: 80, Host: "h2", HostIP: h2IP, HostPort: 30000},
		"d": {VIP: netip.MustParseAddr("10.244.1.6"), Port: 22, Host: "h1", HostIP: h1IP, HostPort: 30001},
	}
	rules := dnatRules("h1", ls, func(l api.Listener) bool { return l.Port != 22 })
	slices.SortFunc(rules, func(a, b nat.Rule) int { return a.VIP.Compare(b.VIP) })
	want := []nat.Rule{
		{VIP: netip.MustParseAddr("10.244.1.5"), Port: 80, HostIP: h1IP, HostPort: 30000},
		// IPv6 clients reach the dual-stack host listener at its v4-mapped address.
		{VIP: netip.MustParseAddr("fd00:0:0:1::5"), Port: 80, HostIP: netip.MustParseAddr("::ffff:192.168.77.1"), HostPort: 30000},
	}
	if !slices.Equal(rules, want) {
		t.Fatalf("rules = %v, want %v", rules, want)
	}
}

func TestGuardBase(t *testing.T) {
	c := Config{
		VXLANDevice:      "vx0",
		EtcdListenClient: "http://192.168.77.1:12379",
		EtcdListenPeer:   "http://192.168.77.1:12380",
		EtcdEndpoints:    []string{"http://192.168.77.9:22379", "https://etcd.example:2379"},
		MetricsAddr:      ":9477",
	}
	g := c.guardBase()
	for _, p := range []uint16{2379, 2380, 12379, 12380, 22379, 9477} {
		if !slices.Contains(g.Ports, p) {
			t.Errorf("port %d not guarded: %v", p, g.Ports)
		}
	}
	// Store members named by address are guarded; names cannot be.
	if !slices.Equal(g.Hosts, []netip.Addr{netip.MustParseAddr("192.168.77.9")}) {
		t.Errorf("hosts %v", g.Hosts)
	}
	if !slices.Equal(g.IfPrefixes, []string{vethPrefix, "vx0"}) {
		t.Errorf("interfaces %v", g.IfPrefixes)
	}
	// The default vxlan device is already covered by the veth prefix.
	c.VXLANDevice = "slim-vxlan"
	if g := c.guardBase(); len(g.IfPrefixes) != 1 {
		t.Errorf("interfaces %v", g.IfPrefixes)
	}
}
