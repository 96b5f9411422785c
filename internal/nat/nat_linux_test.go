package nat

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/slimnet/slim/internal/testenv"
	"github.com/vishvananda/netlink"
)

func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); testutils.UnmountNS(n) })
	return n
}

// hostAndClient builds two namespaces joined by a veth: host 192.168.88.1,
// client 192.168.88.2 with routes to the virtual ranges via the host.
func hostAndClient(t *testing.T) (host, client ns.NetNS) {
	host, client = newNS(t), newNS(t)
	err := host.Do(func(ns.NetNS) error {
		la := netlink.NewLinkAttrs()
		la.Name = "h0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "c0"}); err != nil {
			return err
		}
		peer, err := netlink.LinkByName("c0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(peer, int(client.Fd())); err != nil {
			return err
		}
		if err := setup("h0", "192.168.88.1/24", "fd88::1/64", ""); err != nil {
			return err
		}
		// As for a local container: the host routes its virtual address
		// to a veth; connections the host makes must find a route before
		// the output chain rewrites them.
		h0, _ := netlink.LinkByName("h0")
		for _, d := range []string{"10.244.3.7/32", "fd5a:11::7/128"} {
			_, dst, _ := net.ParseCIDR(d)
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: h0.Attrs().Index, Dst: dst}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Do(func(ns.NetNS) error { return setup("c0", "192.168.88.2/24", "fd88::2/64", "via") }); err != nil {
		t.Fatal(err)
	}
	return host, client
}

func setup(ifname, a4, a6, routes string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	for _, a := range []string{a4, a6} {
		addr, _ := netlink.ParseAddr(a)
		addr.Flags = 0x02 // IFA_F_NODAD
		if err := netlink.AddrAdd(l, addr); err != nil {
			return err
		}
	}
	lo, _ := netlink.LinkByName("lo")
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return err
	}
	if routes == "" {
		return nil
	}
	for _, r := range []struct{ dst, gw string }{{"10.244.0.0/16", "192.168.88.1"}, {"fd5a::/16", "fd88::1"}} {
		_, dst, _ := net.ParseCIDR(r.dst)
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: net.ParseIP(r.gw)}); err != nil {
			return err
		}
	}
	return nil
}

// listen opens a TCP listener in n that answers "ok" to every connection.
func listen(t *testing.T, n ns.NetNS, addr string) { listenSaying(t, n, addr, "ok") }

// listenSaying serves TCP on addr in n: every connection gets say, then
// is closed.
func listenSaying(t *testing.T, n ns.NetNS, addr, say string) {
	t.Helper()
	var ln net.Listener
	if err := n.Do(func(ns.NetNS) (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(say))
			c.Close()
		}
	}()
}

func dial(n ns.NetNS, addr string) error {
	return n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if string(b) != "ok" {
			return fmt.Errorf("read %q", b)
		}
		return nil
	})
}

func TestDNAT(t *testing.T) {
	testenv.RequireRoot(t)
	host, client := hostAndClient(t)
	listen(t, host, "192.168.88.1:20001")
	listen(t, host, "[fd88::1]:20002")
	// The table is opened on the namespace's fd: a conn without one
	// would open its netlink socket later, in whatever namespace the
	// calling thread is in then.
	tb, err := New(int(host.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	rules := []Rule{
		{VIP: netip.MustParseAddr("10.244.3.7"), Port: 80, HostIP: netip.MustParseAddr("192.168.88.1"), HostPort: 20001},
		{VIP: netip.MustParseAddr("fd5a:11::7"), Port: 80, HostIP: netip.MustParseAddr("fd88::1"), HostPort: 20002},
	}
	// Before: nothing listens on the virtual addresses.
	if err := dial(client, "10.244.3.7:80"); err == nil {
		t.Fatal("virtual address answered before any rule")
	}
	for range 2 { // twice: Sync is idempotent
		if err := tb.Sync(rules); err != nil {
			t.Fatal(err)
		}
	}
	got, err := tb.Rules()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, rules) {
		t.Fatalf("rules read back %+v, want %+v", got, rules)
	}
	for _, addr := range []string{"10.244.3.7:80", "[fd5a:11::7]:80"} {
		if err := dial(client, addr); err != nil {
			t.Fatalf("client -> %s through DNAT: %v", addr, err)
		}
		// The host's own connections go through the output chain.
		if err := dial(host, addr); err != nil {
			t.Fatalf("host -> %s through DNAT: %v", addr, err)
		}
	}
	// Rules of an older version (one per listener) or anyone's stray rule
	// in our chains go at the next sync; the chains hold only the lookups.
	conn, err := nftables.New(nftables.WithNetNSFd(int(host.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	pre := &nftables.Chain{Name: "prerouting", Table: tbl}
	conn.AddRule(&nftables.Rule{Table: tbl, Chain: pre, Exprs: []expr.Any{&expr.Counter{}}})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Sync(rules); err != nil {
		t.Fatal(err)
	}
	if rs, err := conn.GetRules(tbl, pre); err != nil || len(rs) != 3 {
		t.Fatalf("prerouting holds %d rules after sync (%v), want the 3 lookups (listeners v4 and v6, services)", len(rs), err)
	}
	// An IPv6 virtual address served by a dual-stack host listener on the
	// IPv4 underlay (what slimd programs) keeps its v4-mapped host address.
	mapped := append(slices.Clone(rules), Rule{VIP: netip.MustParseAddr("fd5a:11::8"), Port: 443, HostIP: netip.MustParseAddr("::ffff:192.168.88.1"), HostPort: 20003})
	if err := tb.Sync(mapped); err != nil {
		t.Fatal(err)
	}
	if got, _ := tb.Rules(); !slices.Equal(got, mapped) {
		t.Fatalf("rules read back %+v, want %+v", got, mapped)
	}
	// Invalid rules are reported and skipped, valid ones still applied.
	bad := append(slices.Clone(rules[:1]), Rule{VIP: netip.MustParseAddr("10.244.3.8"), Port: 81, HostIP: netip.MustParseAddr("fd88::1"), HostPort: 1})
	if err := tb.Sync(bad); err == nil {
		t.Fatal("mixed-family rule accepted")
	}
	if got, _ := tb.Rules(); len(got) != 1 {
		t.Fatalf("after partial sync: %+v", got)
	}
	if err := tb.Sync(nil); err != nil {
		t.Fatal(err)
	}
	if err := dial(client, "10.244.3.7:80"); err == nil {
		t.Fatal("virtual address still answers after rules were removed")
	}
	for range 2 {
		if err := tb.Remove(); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := tb.Rules(); err == nil && len(got) > 0 {
		t.Fatalf("rules after Remove: %+v", got)
	}
}
