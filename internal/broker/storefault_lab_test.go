package broker_test

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/labtest"
	"github.com/slimnet/slim/internal/poll"
	"golang.org/x/sys/unix"
)

// convergeWithin is how soon after the store's return everything must
// work again (the control-plane issue's goal).
const convergeWithin = 10 * time.Second

// The store fails apart from the hosts (a 3-member etcd cluster on
// machines of its own): one member killed, the whole store down for a
// minute, and a host cut off from it until its lease expires. Established
// connections keep flowing throughout, connects to known listeners stay on
// the fast path, and everything converges soon after the store returns,
// with no address, subnet or port block lost or given twice.
func TestStoreFaults(t *testing.T) {
	l := labtest.New(t, labtest.Hosts(2), labtest.EtcdMembers(3))
	dumpOnFailure(t, l.Config)
	ctx := t.Context()
	echo := []string{"socat", "TCP-LISTEN:7000,fork,reuseaddr", "EXEC:cat"}
	srv := l.Run(lab.RunSpec{Host: "h1", Name: "srv", Command: echo})
	l.Run(lab.RunSpec{Host: "h2", Name: "cli", Command: []string{"sleep", "infinity"}})
	l.Run(lab.RunSpec{Host: "h1", Name: "cli1", Command: []string{"sleep", "infinity"}})
	waitListener(t, l.Config, "h2", srv.IPv4, 7000, true)
	tr := startTraffic(t, l, "h2", srv.IPv4, 7000)
	tr.progress(t, "before")
	dst := netip.AddrPortFrom(srv.IPv4, 7000)
	plan0 := clusterState(t, l.Config)

	var srv2 lab.Container
	var outOfCluster window
	t.Run("one-member-killed", func(t *testing.T) {
		leader, err := lab.EtcdLeader(ctx, l.Config)
		if err != nil {
			t.Fatal(err)
		}
		if err := lab.StopEtcd(ctx, l.Config, leader, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		t.Logf("killed the leader, %s", leader)
		tr.progress(t, "leader killed")
		echoSwapped(t, l, "cli", dst, "leader killed")
		// New containers and listeners need the store's quorum, which two
		// members still make.
		srv2 = l.Run(lab.RunSpec{Host: "h2", Name: "srv2", Command: []string{"socat", "TCP-LISTEN:7001,fork,reuseaddr", "EXEC:cat"}})
		waitListener(t, l.Config, "h1", srv2.IPv4, 7001, true)
		echoSwapped(t, l, "cli1", netip.AddrPortFrom(srv2.IPv4, 7001), "to a listener made with a member down")
		if err := lab.Up(ctx, l.Config); err != nil {
			t.Fatal(err)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("store-down-60s", func(t *testing.T) {
		members, err := lab.EtcdMembers(l.Config)
		if err != nil {
			t.Fatal(err)
		}
		for name := range members {
			if err := lab.StopEtcd(ctx, l.Config, name, unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		down := time.Now()
		t.Logf("store down at %s", down.Format("15:04:05.000"))
		tr.streaming(t, "store down")
		// Connects to listeners the caches know stay on the fast path.
		echoSwapped(t, l, "cli", dst, "store down")
		// A new container fails, within the API's deadline, saying why.
		start := time.Now()
		_, err = lab.Run(ctx, l.Config, lab.RunSpec{Host: "h2", Name: "late", Command: []string{"sleep", "infinity"}})
		if err == nil || !strings.Contains(err.Error(), "is the store, etcd, reachable") {
			t.Fatalf("container started with the store down, or an unclear error: %v", err)
		}
		t.Logf("a new container failed after %s: %v", time.Since(start).Round(time.Second), err)
		// A listen() waits for the store at most 5 s, then stays in the
		// container: its clients use the overlay.
		before := metric(t, "h2", "slim_broker_fallbacks_total", `reason="store"`)
		l.Output(ctx, "cli", "sh", "-c", "socat TCP-LISTEN:7002,fork,reuseaddr EXEC:cat </dev/null >/dev/null 2>&1 &")
		poll.Until(t, 15*time.Second, func() error {
			if n := metric(t, "h2", "slim_broker_fallbacks_total", `reason="store"`); n <= before {
				return fmt.Errorf("no listen left to the container for the store (%v)", n)
			}
			return nil
		})
		st, err := api.NewClient(lab.SocketPath(l.Config, "h2")).Status(ctx)
		if err != nil {
			t.Fatalf("status with the store down: %v", err)
		}
		if time.Since(st.StoreContact) < 5*time.Second {
			t.Errorf("status says the store answered %s ago", time.Since(st.StoreContact))
		}
		time.Sleep(time.Until(down.Add(55 * time.Second)))
		tr.streaming(t, "store down for 55 s")
		echoSwapped(t, l, "cli", dst, "store down for 55 s")
		time.Sleep(time.Until(down.Add(60 * time.Second)))

		if err := lab.Up(ctx, l.Config); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		var late lab.Container
		poll.Until(t, convergeWithin, func() error {
			c, err := lab.Run(ctx, l.Config, lab.RunSpec{Host: "h2", Name: "late", Command: []string{"socat", "TCP-LISTEN:7003,fork,reuseaddr", "EXEC:cat"}})
			late = c
			return err
		})
		poll.Until(t, convergeWithin-time.Since(back), func() error {
			return listenerIn(ctx, l.Config, "h1", netip.AddrPortFrom(late.IPv4, 7003))
		})
		t.Logf("a new container and its listener were published %s after the store's return", time.Since(back).Round(100*time.Millisecond))
		echoSwapped(t, l, "cli1", netip.AddrPortFrom(late.IPv4, 7003), "after the store's return")
		// The listener made during the outage serves, over the overlay.
		cli := containerIP(t, l, "cli")
		out := l.Output(ctx, "cli1", "sh", "-c", fmt.Sprintf("echo hello | socat -t 2 - TCP:%s:7002", cli))
		if strings.TrimSpace(out) != "hello" {
			t.Fatalf("listener made during the outage: %q", out)
		}
		tr.progress(t, "after the store's return")
		sameCluster(t, plan0, clusterState(t, l.Config))
	})
	if t.Failed() {
		return
	}

	t.Run("host-cut-off-until-its-lease-expires", func(t *testing.T) {
		members, err := lab.EtcdMembers(l.Config)
		if err != nil {
			t.Fatal(err)
		}
		route := func(op string) {
			for _, ip := range slices.SortedFunc(maps.Values(members), netip.Addr.Compare) {
				l.Output(ctx, "h2", "ip", "route", op, "blackhole", ip.String()+"/32")
			}
		}
		before := clusterState(t, l.Config)
		route("add")
		outOfCluster.from = time.Now()
		t.Logf("h2 cut off from the store at %s", outOfCluster.from.Format("15:04:05.000"))
		cut := true
		t.Cleanup(func() {
			if cut {
				route("del")
			}
		})
		// h2's host record and listeners go with its lease (10 s in the lab).
		h1 := api.NewClient(lab.SocketPath(l.Config, "h1"))
		poll.Until(t, 40*time.Second, func() error {
			st, err := h1.Status(ctx)
			if err != nil {
				return err
			}
			if st.KnownHosts != 1 {
				return fmt.Errorf("h1 still knows %d hosts", st.KnownHosts)
			}
			return listenerGone(ctx, l.Config, "h1", netip.AddrPortFrom(srv2.IPv4, 7001))
		})
		// h2's own connections never needed the store.
		tr.streaming(t, "h2 cut off")
		route("del")
		t.Logf("h2 reconnected at %s", time.Now().Format("15:04:05.000"))
		cut = false
		back := time.Now()
		poll.Until(t, convergeWithin, func() error {
			st, err := h1.Status(ctx)
			if err != nil {
				return err
			}
			if st.Peers != 1 {
				return fmt.Errorf("h1 programs %d peers", st.Peers)
			}
			return listenerIn(ctx, l.Config, "h1", netip.AddrPortFrom(srv2.IPv4, 7001))
		})
		t.Logf("h2 rejoined with its listeners %s after the cut ended", time.Since(back).Round(100*time.Millisecond))
		outOfCluster.to = time.Now()
		echoSwapped(t, l, "cli1", netip.AddrPortFrom(srv2.IPv4, 7001), "after h2 rejoined")
		tr.progress(t, "after h2 rejoined")
		sameCluster(t, before, clusterState(t, l.Config))
	})
	// From its lease's expiry until it rejoins, h1 counts h2 out of the
	// cluster (its overlay peer and its port blocks' host go), so h2's new
	// connections to h1 are refused in that window: the price of leases
	// (docs/architecture.md, "When the store fails").
	tr.check(t, outOfCluster)
}

func listenerIn(ctx context.Context, cfg lab.Config, host string, ap netip.AddrPort) error {
	ls, err := api.NewClient(lab.SocketPath(cfg, host)).Listeners(ctx, "")
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(ls, func(l api.Listener) bool { return l.VIP == ap.Addr() && l.Port == ap.Port() }) {
		return fmt.Errorf("%s does not know listener %s (listeners %v)", host, ap, ls)
	}
	return nil
}

func listenerGone(ctx context.Context, cfg lab.Config, host string, ap netip.AddrPort) error {
	ls, err := api.NewClient(lab.SocketPath(cfg, host)).Listeners(ctx, "")
	if err != nil {
		return err
	}
	if i := slices.IndexFunc(ls, func(l api.Listener) bool { return l.VIP == ap.Addr() && l.Port == ap.Port() }); i >= 0 {
		return fmt.Errorf("%s still knows listener %s: %+v", host, ap, ls[i])
	}
	return nil
}

func containerIP(t *testing.T, l *labtest.Lab, name string) netip.Addr {
	t.Helper()
	ls, err := lab.List(t.Context(), l.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ls.Containers {
		if c.Name == name {
			return c.IPv4
		}
	}
	t.Fatalf("no container %s", name)
	return netip.Addr{}
}

// cluster is what the store holds that must never be lost or given twice.
type cluster struct {
	subnets map[string]netip.Prefix    // host -> subnet
	addrs   map[string]netip.Addr      // container/if -> address
	blocks  map[string][]api.PortBlock // container/if -> port blocks
}

// clusterState reads the hosts and endpoints as both hosts see them,
// checks that they agree, and that no subnet, address or port block is
// held twice.
func clusterState(t *testing.T, cfg lab.Config) cluster {
	t.Helper()
	var views []cluster
	for _, host := range []string{"h1", "h2"} {
		var c cluster
		poll.Until(t, convergeWithin, func() error {
			c = cluster{subnets: map[string]netip.Prefix{}, addrs: map[string]netip.Addr{}, blocks: map[string][]api.PortBlock{}}
			cl := api.NewClient(lab.SocketPath(cfg, host))
			hosts, err := cl.Hosts(t.Context())
			if err != nil {
				return err
			}
			seen := map[netip.Prefix]string{}
			for _, h := range hosts {
				if o, dup := seen[h.Subnet4]; dup {
					return fmt.Errorf("subnet %s held by %s and %s", h.Subnet4, o, h.Name)
				}
				seen[h.Subnet4] = h.Name
				c.subnets[h.Name] = h.Subnet4
			}
			eps, err := cl.Endpoints(t.Context(), "")
			if err != nil {
				return err
			}
			addrs := map[netip.Addr]string{}
			blocks := map[string]string{}
			for _, ep := range eps {
				id := ep.ContainerID + "/" + ep.IfName
				if o, dup := addrs[ep.IPv4]; dup {
					return fmt.Errorf("address %s held by %s and %s", ep.IPv4, o, id)
				}
				addrs[ep.IPv4] = id
				c.addrs[id] = ep.IPv4
				for _, b := range ep.PortBlocks {
					k := fmt.Sprintf("%s/%d/%t", ep.Host, b.Start, b.IPv6)
					if o, dup := blocks[k]; dup {
						return fmt.Errorf("port block %s held by %s and %s", k, o, id)
					}
					blocks[k] = id
				}
				c.blocks[id] = ep.PortBlocks
			}
			return nil
		})
		views = append(views, c)
	}
	if !maps.Equal(views[0].subnets, views[1].subnets) || !maps.Equal(views[0].addrs, views[1].addrs) {
		t.Fatalf("h1 and h2 disagree:\n%+v\n%+v", views[0], views[1])
	}
	return views[0]
}

// sameCluster asserts that every host and endpoint of before is still
// there with the same subnet, address and port blocks.
func sameCluster(t *testing.T, before, after cluster) {
	t.Helper()
	for h, s := range before.subnets {
		if after.subnets[h] != s {
			t.Errorf("host %s: subnet %s, was %s", h, after.subnets[h], s)
		}
	}
	for id, a := range before.addrs {
		if after.addrs[id] != a {
			t.Errorf("endpoint %s: address %s, was %s", id, after.addrs[id], a)
		}
		if !slices.Equal(after.blocks[id], before.blocks[id]) {
			t.Errorf("endpoint %s: port blocks %v, were %v", id, after.blocks[id], before.blocks[id])
		}
	}
}

// The underlay link of a host goes down for 3 s and comes back: a TCP
// stream across the flap survives (shorter than TCP's timeouts), and the
// overlay and the fast path work again soon after.
func TestUnderlayFlap(t *testing.T) {
	l := labtest.New(t, labtest.Hosts(2))
	dumpOnFailure(t, l.Config)
	ctx := t.Context()
	srv := l.Run(lab.RunSpec{Host: "h1", Name: "srv", Command: []string{"socat", "TCP-LISTEN:7000,fork,reuseaddr", "EXEC:cat"}})
	l.Run(lab.RunSpec{Host: "h2", Name: "cli", Command: []string{"sleep", "infinity"}})
	waitListener(t, l.Config, "h2", srv.IPv4, 7000, true)
	tr := startTraffic(t, l, "h2", srv.IPv4, 7000)
	tr.progress(t, "before")
	var flap window
	flap.from = time.Now()
	l.Output(ctx, "h2", "ip", "link", "set", "eth0", "down")
	up := false
	t.Cleanup(func() {
		if !up {
			lab.Output(context.Background(), l.Config, "h2", "ip", "link", "set", "eth0", "up")
		}
	})
	time.Sleep(3 * time.Second)
	l.Output(ctx, "h2", "ip", "link", "set", "eth0", "up")
	up = true
	back := time.Now()
	// The stream's bytes queued during the flap go out on TCP's next
	// retransmission (about 1-2 s after the link is back here).
	tr.progress(t, "after the flap")
	poll.Until(t, convergeWithin, func() error {
		_, err := lab.Output(ctx, l.Config, "cli", "ping", "-c", "1", "-W", "1", srv.IPv4.String())
		return err
	})
	t.Logf("overlay (ping) back %s after the link", time.Since(back).Round(100*time.Millisecond))
	flap.to = time.Now()
	echoSwapped(t, l, "cli", netip.AddrPortFrom(srv.IPv4, 7000), "after the flap")
	for _, h := range []string{"h1", "h2"} {
		st, err := api.NewClient(lab.SocketPath(l.Config, h)).Status(ctx)
		if err != nil || st.Peers != 1 {
			t.Errorf("%s after the flap: %d peers, %v", h, st.Peers, err)
		}
	}
	// A short connection that started while the link was down may fail;
	// none after.
	tr.check(t, flap)
}
