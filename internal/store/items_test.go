package store

import (
	"fmt"
	"net/netip"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
)

// An endpoint comes out of the packed store as it went in, whether it
// fits the packed form or is kept whole; only other hosts' netns paths
// are dropped.
func TestEndpointItemsRoundTrip(t *testing.T) {
	created := time.Date(2026, 12, 5, 6, 0, 0, 0, time.UTC)
	base := api.Endpoint{ContainerID: "c1", IfName: "eth0", Host: "h1", IPv4: netip.MustParseAddr("10.244.0.2"),
		Labels: map[string]string{"app": "web"}, Netns: "/var/run/netns/c1", Created: created,
		PortBlocks: []api.PortBlock{{Start: 40000, Size: 64}}}
	with := func(f func(*api.Endpoint)) api.Endpoint {
		ep := base
		f(&ep)
		return ep
	}
	cases := map[string]struct {
		key   string
		ep    api.Endpoint
		whole bool
	}{
		"plain": {"h1/c1/eth0", base, false},
		"dual stack": {"h1/c1/eth0", with(func(ep *api.Endpoint) {
			ep.IPv6 = netip.MustParseAddr("fd00::2")
			ep.PortBlocks = append(ep.PortBlocks, api.PortBlock{Start: 40064, Size: 64, IPv6: true})
		}), false},
		"v6 only":          {"h1/c1/eth0", with(func(ep *api.Endpoint) { ep.IPv4 = netip.Addr{}; ep.IPv6 = netip.MustParseAddr("fd00::2") }), false},
		"no blocks":        {"h1/c1/eth0", with(func(ep *api.Endpoint) { ep.PortBlocks = nil }), false},
		"named ports":      {"h1/c1/eth0", with(func(ep *api.Endpoint) { ep.Ports = []api.NamedPort{{Name: "http", Port: 80, Protocol: "TCP"}} }), false},
		"no labels":        {"h1/c1/eth0", with(func(ep *api.Endpoint) { ep.Labels = nil }), false},
		"zero created":     {"h1/c1/eth0", with(func(ep *api.Endpoint) { ep.Created = time.Time{} }), false},
		"names unlike key": {"h1/c2/eth0", base, true},
		"key without if":   {"h1/c1", base, true},
		"mapped v6":        {"h1/c1/eth0", with(func(ep *api.Endpoint) { ep.IPv6 = netip.MustParseAddr("::ffff:10.0.0.1") }), true},
		"zoned v6":         {"h1/c1/eth0", with(func(ep *api.Endpoint) { ep.IPv6 = netip.MustParseAddr("fe80::1%eth0") }), true},
		"v6 as IPv4":       {"h1/c1/eth0", with(func(ep *api.Endpoint) { ep.IPv4 = netip.MustParseAddr("fd00::3") }), true},
		"local time":       {"h1/c1/eth0", with(func(ep *api.Endpoint) { ep.Created = created.In(time.FixedZone("X", 3600)) }), true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if p := packEndpoint(c.key, c.ep); (p.whole != nil) != c.whole {
				t.Errorf("kept whole: %v, want %v", p.whole != nil, c.whole)
			}
			for _, self := range []string{"", "h1", "h2", "h"} {
				e := newEndpointItems(self)
				e.set(c.key, c.ep)
				want := c.ep
				if self == "h2" || self == "h" {
					want.Netns = ""
				}
				got, ok := e.get(c.key)
				if !ok || !reflect.DeepEqual(got, want) {
					t.Errorf("self %q: got %+v, want %+v", self, got, want)
				}
				n := 0
				e.all(func(k string, v api.Endpoint) bool {
					n++
					if k != c.key || !reflect.DeepEqual(v, want) {
						t.Errorf("self %q: all gave %q %+v", self, k, v)
					}
					return true
				})
				e.del(c.key)
				if _, ok := e.get(c.key); ok || n != 1 || e.len() != 0 || len(e.netns) != 0 {
					t.Errorf("self %q: after del: found %v, len %d, netns %v (all gave %d)", self, ok, e.len(), e.netns, n)
				}
			}
		})
	}
}

// Port block and named port lists are shared by the endpoints that have
// the same, and one endpoint's list does not change another's.
func TestEndpointItemsShareLists(t *testing.T) {
	e := newEndpointItems("")
	bs := []api.PortBlock{{Start: 1024, Size: 64}}
	ports := []api.NamedPort{{Name: "http", Port: 80, Protocol: "TCP"}}
	e.set("h/a/eth0", api.Endpoint{Host: "h", ContainerID: "a", IfName: "eth0", PortBlocks: bs, Ports: ports})
	e.set("h/b/eth0", api.Endpoint{Host: "h", ContainerID: "b", IfName: "eth0", PortBlocks: []api.PortBlock{{Start: 1024, Size: 64}}, Ports: []api.NamedPort{{Name: "http", Port: 80, Protocol: "TCP"}}})
	e.set("h/c/eth0", api.Endpoint{Host: "h", ContainerID: "c", IfName: "eth0", PortBlocks: []api.PortBlock{{Start: 1024, Size: 64, IPv6: true}}})
	bs[0].Start, ports[0].Port = 2048, 8080 // the caller's slices are its own
	a, _ := e.get("h/a/eth0")
	b, _ := e.get("h/b/eth0")
	c, _ := e.get("h/c/eth0")
	if &a.PortBlocks[0] != &b.PortBlocks[0] || &a.Ports[0] != &b.Ports[0] {
		t.Error("equal lists are not shared")
	}
	if &a.PortBlocks[0] == &c.PortBlocks[0] {
		t.Error("different lists are shared")
	}
	if a.PortBlocks[0].Start != 1024 || a.Ports[0].Port != 80 || !c.PortBlocks[0].IPv6 {
		t.Errorf("stored lists changed: %+v %+v %+v", a.PortBlocks, a.Ports, c.PortBlocks)
	}
}

// A cached remote endpoint with a runtime's 64-character container ID
// costs at most 240 bytes of heap, its key included (about 200 measured;
// unpacked it was 450: docs/scale.md).
func TestEndpointItemsMemory(t *testing.T) {
	const hosts, per = 200, 500
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	ip := netip.MustParseAddr("10.128.0.1")
	eps := make([][]byte, 0, hosts*per)
	keys := make([]string, 0, hosts*per)
	for h := range hosts {
		hn := fmt.Sprintf("node-%04d", h)
		for j := range per {
			id := fmt.Sprintf("%064x", h*per+j) // as runtimes name containers
			b, err := encodeEndpoint(api.Endpoint{ContainerID: id, IfName: "eth0", Host: hn, IPv4: ip,
				Labels: map[string]string{"app": fmt.Sprint("app", j%10), "io.kubernetes.pod.namespace": "default"},
				Netns:  "/var/run/netns/cni-" + id[:36], Created: time.Now().UTC().Truncate(time.Second),
				PortBlocks: []api.PortBlock{{Start: uint16(1024 + 64*(j%900)), Size: 64}}})
			if err != nil {
				t.Fatal(err)
			}
			ip = ip.Next()
			eps, keys = append(eps, b), append(keys, hn+"/"+id+"/eth0")
		}
	}
	before := heap()
	e := newEndpointItems("node-0000")
	for i, b := range eps {
		ep, err := decodeEndpoint(b)
		if err != nil {
			t.Fatal(err)
		}
		e.set(string([]byte(keys[i])), ep) // the cache's key is its own copy
	}
	after := heap()
	runtime.KeepAlive(eps)
	runtime.KeepAlive(keys)
	used := after - before
	per1 := used / uint64(e.len())
	t.Logf("%d endpoints: %.1f MB, %d bytes each", e.len(), float64(used)/1e6, per1)
	if per1 > 240 {
		t.Errorf("a cached endpoint costs %d bytes, want at most 240", per1)
	}
	runtime.KeepAlive(e)
}
