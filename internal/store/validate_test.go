package store

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/slimnet/slim/internal/api"
)

var testLimits = Limits{
	Config:    ClusterConfig{Cluster4: netip.MustParsePrefix("10.244.0.0/16"), HostBits4: 24, Cluster6: netip.MustParsePrefix("fd00:244::/48"), HostBits6: 64},
	PortFirst: 20480, PortLast: 32767,
}

var h1 = api.Host{Name: "h1", UnderlayIP: netip.MustParseAddr("192.168.77.1"), VTEPMAC: "02:00:00:00:00:01",
	Subnet4: netip.MustParsePrefix("10.244.0.0/24"), Subnet6: netip.MustParsePrefix("fd00:244:0:0::/64")}

func TestLimitsHost(t *testing.T) {
	mod := func(f func(*api.Host)) api.Host { h := h1; f(&h); return h }
	for _, tc := range []struct {
		name string
		h    api.Host
		ok   bool
	}{
		{"good", h1, true},
		{"loopback underlay", mod(func(h *api.Host) { h.UnderlayIP = netip.MustParseAddr("127.0.0.1") }), false},
		{"ipv6 underlay", mod(func(h *api.Host) { h.UnderlayIP = netip.MustParseAddr("fd00::1") }), false},
		{"multicast underlay", mod(func(h *api.Host) { h.UnderlayIP = netip.MustParseAddr("224.0.0.1") }), false},
		{"subnet outside the cluster", mod(func(h *api.Host) { h.Subnet4 = netip.MustParsePrefix("192.168.77.0/24") }), false},
		{"subnet of another size", mod(func(h *api.Host) { h.Subnet4 = netip.MustParsePrefix("10.244.0.0/20") }), false},
		{"subnet not a prefix", mod(func(h *api.Host) { h.Subnet4 = netip.MustParsePrefix("10.244.0.7/24") }), false},
		{"ipv6 subnet outside", mod(func(h *api.Host) { h.Subnet6 = netip.MustParsePrefix("fd99::/64") }), false},
		{"no name", mod(func(h *api.Host) { h.Name = "" }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := testLimits.Host(tc.h)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Errorf("Host: %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func TestLimitsListener(t *testing.T) {
	good := api.Listener{VIP: netip.MustParseAddr("10.244.0.5"), Port: 80, Host: "h1", HostIP: h1.UnderlayIP, HostPort: 20737, ContainerID: "c"}
	mod := func(f func(*api.Listener)) api.Listener { l := good; f(&l); return l }
	for _, tc := range []struct {
		name  string
		l     api.Listener
		lease int64
		known bool
		ok    bool
	}{
		{"good", good, 7, true, true},
		{"on another lease", good, 8, true, false},
		{"on no lease", good, 0, true, false},
		{"ipv6", mod(func(l *api.Listener) { l.VIP = netip.MustParseAddr("fd00:244::5") }), 7, true, true},
		// The attack of the hardening issue: a made-up VIP mapped to a
		// service on the host's own loopback.
		{"loopback host address", mod(func(l *api.Listener) { l.HostIP = netip.MustParseAddr("127.0.0.1") }), 7, true, false},
		{"another host's address", mod(func(l *api.Listener) { l.HostIP = netip.MustParseAddr("192.168.77.2") }), 7, true, false},
		{"host port outside the range", mod(func(l *api.Listener) { l.HostPort = 22 }), 7, true, false},
		{"vip outside the host's subnet", mod(func(l *api.Listener) { l.VIP = netip.MustParseAddr("10.244.9.5") }), 7, true, false},
		{"vip is the gateway", mod(func(l *api.Listener) { l.VIP = netip.MustParseAddr("10.244.0.0") }), 7, true, false},
		{"port 0", mod(func(l *api.Listener) { l.Port = 0 }), 7, true, false},
		{"unknown host", good, 7, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := testLimits.Listener(tc.l, tc.lease, h1, 7, tc.known)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Errorf("Listener: %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func TestLimitsEndpoint(t *testing.T) {
	good := api.Endpoint{ContainerID: "c", IfName: "eth0", Host: "h1", IPv4: netip.MustParseAddr("10.244.0.5"),
		IPv6: netip.MustParseAddr("fd00:244::5"), PortBlocks: []api.PortBlock{{Start: 20480, Size: 256}, {Start: 20736, Size: 256, IPv6: true}}}
	mod := func(f func(*api.Endpoint)) api.Endpoint { e := good; f(&e); return e }
	for _, tc := range []struct {
		name  string
		ep    api.Endpoint
		known bool
		ok    bool
	}{
		{"good", good, true, true},
		{"address of another host", mod(func(e *api.Endpoint) { e.IPv4 = netip.MustParseAddr("10.244.1.5") }), true, false},
		{"ipv6 of another host", mod(func(e *api.Endpoint) { e.IPv6 = netip.MustParseAddr("fd00:244:0:1::5") }), true, false},
		{"block outside the range", mod(func(e *api.Endpoint) { e.PortBlocks = []api.PortBlock{{Start: 512, Size: 256}} }), true, false},
		{"block across the range's end", mod(func(e *api.Endpoint) { e.PortBlocks = []api.PortBlock{{Start: 32512, Size: 512}} }), true, false},
		{"unaligned block", mod(func(e *api.Endpoint) { e.PortBlocks = []api.PortBlock{{Start: 20500, Size: 256}} }), true, false},
		{"unknown host", good, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := testLimits.Endpoint(tc.ep, h1, tc.known)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Errorf("Endpoint: %v, want ok %v", err, tc.ok)
			}
		})
	}
}
