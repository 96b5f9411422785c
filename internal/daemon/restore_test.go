package daemon

import (
	"net/netip"
	"testing"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
)

func TestOrphanListeners(t *testing.T) {
	ap := netip.MustParseAddrPort
	ep := api.Endpoint{ContainerID: "web", IfName: "eth0", IPv4: netip.MustParseAddr("10.244.1.2")}
	byVIP := map[netip.Addr]api.Endpoint{ep.IPv4: ep}
	owned := []bpf.Listener{
		{HostIP: h1IP, HostPort: 30000, VIP: ap("10.244.1.2:80")},   // record expired, socket listening: re-published
		{HostIP: h1IP, HostPort: 30001, VIP: ap("10.244.1.2:443")},  // still in the store
		{HostIP: h1IP, HostPort: 30002, VIP: ap("10.244.1.2:8080")}, // host socket closed
		{HostIP: h1IP, HostPort: 30003, VIP: ap("10.244.1.9:80")},   // container gone
	}
	have := map[netip.AddrPort]bool{ap("10.244.1.2:443"): true}
	open := map[uint16]bool{30000: true, 30001: true, 30003: true}
	got := orphanListeners("h1", owned, have, open, byVIP)
	want := api.Listener{VIP: ep.IPv4, Port: 80, Host: "h1", HostIP: h1IP, HostPort: 30000, ContainerID: "web", IfName: "eth0"}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("orphans = %+v, want [%+v]", got, want)
	}
}
