package nat

import (
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/testenv"
)

// TestServiceDNAT: connections from a container to a service port are
// spread over its backends, UDP too; a sync with fewer backends or none
// takes effect at once.
func TestServiceDNAT(t *testing.T) {
	testenv.RequireRoot(t)
	host, client, other := routed(t)
	// Two TCP backends that say who they are, and a UDP echo.
	listenSaying(t, other, "192.168.99.2:8080", "a")
	listenSaying(t, other, "192.168.99.2:8081", "b")
	var pc net.PacketConn
	if err := other.Do(func(ns.NetNS) (err error) { pc, err = net.ListenPacket("udp", "192.168.99.2:5353"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 64)
		for {
			n, a, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo:"), b[:n]...), a)
		}
	}()
	var tb *Table
	if err := host.Do(func(ns.NetNS) (err error) { tb, err = New(-1); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Do(func(ns.NetNS) error { return tb.Remove() }) })
	sync := func(svcs []Service) {
		t.Helper()
		err := host.Do(func(ns.NetNS) error {
			if err := tb.Sync(nil); err != nil { // the NAT chains and their lookups
				return err
			}
			return tb.SyncServices(svcs)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	vip := netip.MustParseAddr("10.96.0.10")
	ab := []netip.AddrPort{netip.MustParseAddrPort("192.168.99.2:8080"), netip.MustParseAddrPort("192.168.99.2:8081")}
	udp := Service{VIP: vip, Proto: unix.IPPROTO_UDP, Port: 53, Backends: []netip.AddrPort{netip.MustParseAddrPort("192.168.99.2:5353")}}
	sync([]Service{{VIP: vip, Proto: unix.IPPROTO_TCP, Port: 80, Backends: ab}, udp})

	who := func() string {
		var got string
		client.Do(func(ns.NetNS) error {
			c, err := net.DialTimeout("tcp", "10.96.0.10:80", time.Second)
			if err != nil {
				got = err.Error()
				return nil
			}
			defer c.Close()
			b, _ := io.ReadAll(c)
			got = string(b)
			return nil
		})
		return got
	}
	count := map[string]int{}
	for range 200 {
		count[who()]++
	}
	if count["a"] < 60 || count["b"] < 60 || count["a"]+count["b"] != 200 {
		t.Errorf("200 connections to the service: %v, want both backends, about 100 each", count)
	}
	if reply, err := udpAsk(client, "10.96.0.10:53"); reply != "echo:q" {
		t.Errorf("UDP service: reply %q (%v), want echo:q", reply, err)
	}

	// One backend left: every connection goes to it.
	sync([]Service{{VIP: vip, Proto: unix.IPPROTO_TCP, Port: 80, Backends: ab[1:]}, udp})
	for range 20 {
		if w := who(); w != "b" {
			t.Fatalf("one backend left: a connection reached %q", w)
		}
	}
	// No backend: TCP gets a reset and UDP port unreachable, at once. A
	// host has a default route (here: to the other namespace), so the
	// cluster IP's packets would be forwarded on and lost.
	err := host.Do(func(ns.NetNS) error {
		return netlink.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Gw: net.ParseIP("192.168.99.2")})
	})
	if err != nil {
		t.Fatal(err)
	}
	sync([]Service{{VIP: vip, Proto: unix.IPPROTO_TCP, Port: 80}, {VIP: vip, Proto: unix.IPPROTO_UDP, Port: 53}})
	start := time.Now()
	if w := who(); !strings.Contains(w, "connection refused") || time.Since(start) > 500*time.Millisecond {
		t.Errorf("a service without backends: %q after %v, want connection refused at once", w, time.Since(start))
	}
	if _, uerr := udpAsk(client, "10.96.0.10:53"); uerr == nil || !strings.Contains(uerr.Error(), "connection refused") {
		t.Errorf("UDP to a service without backends: %v, want connection refused (port unreachable)", uerr)
	}
	// None: the service's packets are not translated any more.
	sync(nil)
	if w := who(); w == "a" || w == "b" {
		t.Errorf("services removed: a connection still reached backend %q", w)
	}
}

// udpAsk sends "q" to addr from n and returns the reply (a second at most).
func udpAsk(n ns.NetNS, addr string) (string, error) {
	var reply string
	err := n.Do(func(ns.NetNS) error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		c.Write([]byte("q"))
		b := make([]byte, 64)
		k, err := c.Read(b)
		reply = string(b[:k])
		return err
	})
	return reply, err
}
