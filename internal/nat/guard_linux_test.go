package nat

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/slimnet/slim/internal/testenv"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A "container" behind a slim* veth cannot reach the guarded ports on its
// host, neither on the host's own address nor through it to another host;
// other ports, and the host itself, still can.
func TestGuard(t *testing.T) {
	testenv.RequireRoot(t)
	host, client, other := routed(t)
	do := func(n ns.NetNS, f func() error) {
		t.Helper()
		if err := n.Do(func(ns.NetNS) error { return f() }); err != nil {
			t.Fatal(err)
		}
	}
	// Listeners: the host and the other host each serve a guarded port
	// (2379) and an open one (8080).
	for _, n := range []struct {
		ns   ns.NetNS
		addr string
	}{{host, "192.168.88.1"}, {other, "192.168.99.2"}} {
		for _, port := range []string{"2379", "8080"} {
			listen(t, n.ns, n.addr+":"+port)
		}
	}
	var tb *Table
	do(host, func() (err error) { tb, err = New(-1); return err })
	dial := func(from ns.NetNS, to string) error {
		var err error
		from.Do(func(ns.NetNS) error {
			var c net.Conn
			if c, err = net.DialTimeout("tcp4", to, 500*time.Millisecond); err == nil {
				c.Close()
			}
			return nil
		})
		return err
	}
	reach := func(want bool, from ns.NetNS, to string) {
		t.Helper()
		if err := dial(from, to); (err == nil) != want {
			t.Errorf("connect to %s: %v; want reachable %v", to, err, want)
		}
	}
	reach(true, client, "192.168.88.1:2379") // no guard yet
	do(host, func() error {
		return tb.SyncGuard(Guard{IfPrefixes: []string{"slim"}, Ports: []uint16{2379, 2380, 9612}, Hosts: []netip.Addr{netip.MustParseAddr("192.168.99.2")}})
	})
	reach(false, client, "192.168.88.1:2379") // the host's own store
	reach(false, client, "192.168.99.2:2379") // another host's
	reach(true, client, "192.168.88.1:8080")
	reach(true, client, "192.168.99.2:8080")
	reach(true, host, "192.168.99.2:2379") // the host itself
	// Idempotent, and the sets follow: another host no longer guarded.
	do(host, func() error {
		return tb.SyncGuard(Guard{IfPrefixes: []string{"slim"}, Ports: []uint16{2379}, Hosts: nil})
	})
	reach(true, client, "192.168.99.2:2379")
	reach(false, client, "192.168.88.1:2379")
	do(host, func() error { return tb.Remove() })
}

// routed builds a host that routes between a container (client,
// 192.168.88.2 behind the host's veth slimg0, 192.168.88.1) and another
// host (other, 192.168.99.2 behind under0, 192.168.99.1).
func routed(t *testing.T) (host, client, other ns.NetNS) {
	t.Helper()
	host, client, other = newNS(t), newNS(t), newNS(t)
	link := func(from ns.NetNS, name, peer string, to ns.NetNS) {
		t.Helper()
		err := from.Do(func(ns.NetNS) error {
			la := netlink.NewLinkAttrs()
			la.Name = name
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: peer}); err != nil {
				return err
			}
			p, err := netlink.LinkByName(peer)
			if err != nil {
				return err
			}
			return netlink.LinkSetNsFd(p, int(to.Fd()))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	link(host, "slimg0", "c0", client) // a container's veth
	link(host, "under0", "o0", other)  // the underlay to another host
	do := func(n ns.NetNS, f func() error) {
		t.Helper()
		if err := n.Do(func(ns.NetNS) error { return f() }); err != nil {
			t.Fatal(err)
		}
	}
	do(host, func() error {
		if err := setup("slimg0", "192.168.88.1/24", "fd88::1/64", ""); err != nil {
			return err
		}
		if err := setup("under0", "192.168.99.1/24", "fd99::1/64", ""); err != nil {
			return err
		}
		return forward()
	})
	do(client, func() error { return setupRoute("c0", "192.168.88.2/24", "192.168.88.1") })
	do(other, func() error { return setupRoute("o0", "192.168.99.2/24", "192.168.99.1") })
	return host, client, other
}

func forward() error {
	return writeSysctl("/proc/sys/net/ipv4/ip_forward", "1")
}

func writeSysctl(path, v string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte(v))
	return err
}

func setupRoute(ifname, addr, gw string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	a, _ := netlink.ParseAddr(addr)
	if err := netlink.AddrAdd(l, a); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return err
	}
	lo, _ := netlink.LinkByName("lo")
	netlink.LinkSetUp(lo)
	return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw)})
}
