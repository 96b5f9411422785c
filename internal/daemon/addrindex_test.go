package daemon

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/poll"
	"github.com/slimnet/slim/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestAddrIndexFollowsChanges: after any sequence of store changes
// (endpoints, blocks and listeners come and go, a host's address changes,
// a host's lease expires and it comes back), the index kept from the
// changes equals what the whole caches give, and the maps written from
// its changes alone equal the index: no pass reads the maps back.
func TestAddrIndexFollowsChanges(t *testing.T) {
	e := newFPEnv(t)
	ctx := t.Context()
	x := newAddrIndex(e.v)
	m := &readCounting{fakeMaps: newFakeMaps()}
	check := func(step string) {
		t.Helper()
		poll.Until(t, 5*time.Second, func() error {
			d := x.update()
			if err := x.flush(m, d.rebuilt); err != nil {
				return err
			}
			hosts, _ := e.v.hosts.Snapshot()
			eps, _ := e.v.endpoints.Snapshot()
			ls, _ := e.v.listeners.Snapshot()
			want := desiredBPF(hosts, eps, ls, e.v.validEndpoint, e.v.validListener)
			if !maps.Equal(x.want.blocks, want.blocks) || !maps.Equal(x.want.listeners, want.listeners) {
				return fmt.Errorf("%s: index %v %v, caches give %v %v", step, x.want.blocks, x.want.listeners, want.blocks, want.listeners)
			}
			if !maps.Equal(m.blocks, want.blocks) || !maps.Equal(m.listeners, want.listeners) {
				return fmt.Errorf("%s: maps %v %v, want %v %v", step, m.blocks, m.listeners, want.blocks, want.listeners)
			}
			return nil
		})
	}
	check("start")
	if m.reads != 1 {
		t.Fatalf("the first pass read the maps back %d times, want once", m.reads)
	}

	// A second host, on a lease of its own.
	h2 := api.Host{Name: "h2", UnderlayIP: h2IP, Subnet4: netip.MustParsePrefix("10.244.2.0/24"), VTEPMAC: "02:00:00:00:00:02"}
	var lease2 clientv3.LeaseID
	join := func() {
		g, err := e.cli.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		lease2 = g.ID
		if err := e.st.PutHost(ctx, h2, lease2); err != nil {
			t.Fatal(err)
		}
	}
	join()
	type ep struct {
		host string
		a    api.Attachment
		vip  netip.Addr
	}
	var eps []ep
	listeners := map[netip.AddrPort]string{} // listener -> host
	rng := rand.New(rand.NewPCG(1, 2))
	nextPort := uint16(30000)
	for i := range 60 {
		step := ""
		switch op := rng.IntN(10); {
		case op < 3 || len(eps) == 0: // a container starts
			h, hn := h2, store.HostNet{Host: "h2", Subnet4: h2.Subnet4}
			if rng.IntN(2) == 0 {
				h, hn = e.v.self, store.HostNet{Host: "h1", Subnet4: e.v.self.Subnet4}
			}
			a := api.Attachment{ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0"}
			r, err := e.st.AddEndpoint(ctx, hn, api.EndpointRequest{ContainerID: a.ContainerID, IfName: a.IfName, Netns: "/nonexistent"}, testBlocks, netip.Addr{}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			eps = append(eps, ep{h.Name, a, r.IPv4})
			step = "add " + a.ContainerID + " on " + h.Name
		case op < 4: // one goes
			j := rng.IntN(len(eps))
			if err := e.st.DelEndpoint(ctx, eps[j].host, eps[j].a); err != nil {
				t.Fatal(err)
			}
			step = "delete " + eps[j].a.ContainerID
			eps = append(eps[:j], eps[j+1:]...)
		case op < 5: // one grows a block
			j := rng.IntN(len(eps))
			if _, _, err := e.st.AddEndpointBlock(ctx, eps[j].host, eps[j].a, testBlocks, false); err != nil {
				t.Fatal(err)
			}
			step = "grow " + eps[j].a.ContainerID
		case op < 7: // one listens
			j := rng.IntN(len(eps))
			l := api.Listener{VIP: eps[j].vip, Port: uint16(8000 + i), Host: eps[j].host, HostIP: h1IP, HostPort: nextPort,
				ContainerID: eps[j].a.ContainerID, IfName: "eth0"}
			id := e.lease
			if l.Host == "h2" {
				l.HostIP, id = h2.UnderlayIP, lease2
			}
			nextPort++
			if _, err := e.st.PutListener(ctx, l, id); err != nil {
				t.Fatal(err)
			}
			listeners[netip.AddrPortFrom(l.VIP, l.Port)] = l.Host
			step = "listen " + l.VIP.String()
		case op < 8: // a listener closes
			for vp, h := range listeners {
				if err := e.st.DeleteListener(ctx, h, vp.Addr(), vp.Port()); err != nil {
					t.Fatal(err)
				}
				delete(listeners, vp)
				step = "close " + vp.String()
				break
			}
		case op < 9: // h2 moves to another underlay address
			h2.UnderlayIP = h2.UnderlayIP.Next()
			if err := e.st.PutHost(ctx, h2, lease2); err != nil {
				t.Fatal(err)
			}
			step = "h2 moves to " + h2.UnderlayIP.String()
		default: // h2's lease expires (its record and listeners go), and it returns
			if _, err := e.cli.Revoke(ctx, lease2); err != nil {
				t.Fatal(err)
			}
			for vp, h := range listeners {
				if h == "h2" {
					delete(listeners, vp)
				}
			}
			check("h2 gone")
			join()
			step = "h2 back"
		}
		check(step)
	}
	if m.reads != 1 {
		t.Errorf("the maps were read back %d times, want only by the first pass", m.reads)
	}
	if len(x.want.blocks) == 0 || len(x.want.listeners) == 0 {
		t.Errorf("the walk left %d blocks and %d listeners: it tested little", len(x.want.blocks), len(x.want.listeners))
	}
	// The index computed from scratch agrees with the one kept by changes,
	// once both have the caches' last events (a check above may pass
	// before the cache applied its step's write).
	poll.Until(t, 5*time.Second, func() error {
		x.update()
		y := newAddrIndex(e.v)
		y.rebuild()
		if !maps.Equal(x.want.blocks, y.want.blocks) || !maps.Equal(x.want.listeners, y.want.listeners) {
			return fmt.Errorf("rebuilt index differs from the kept one: kept %v %v, rebuilt %v %v", x.want.blocks, x.want.listeners, y.want.blocks, y.want.listeners)
		}
		return nil
	})
}

// readCounting counts the read-backs of the maps.
type readCounting struct {
	*fakeMaps
	reads int
}

func (m *readCounting) PortBlocks() ([]bpf.PortBlock, error) {
	m.reads++
	return m.fakeMaps.PortBlocks()
}

// TestAddrIndexRebuildUnderWrites: a rebuild while the caches are
// written does not deadlock (a listener's check reads the listener cache;
// inside that cache's own Range it waited behind the writer forever).
func TestAddrIndexRebuildUnderWrites(t *testing.T) {
	e := newFPEnv(t)
	ctx := t.Context()
	ep, err := e.st.AddEndpoint(ctx, store.HostNet{Host: "h1", Subnet4: e.v.self.Subnet4},
		api.EndpointRequest{ContainerID: "c", IfName: "eth0", Netns: "/nonexistent"}, testBlocks, netip.Addr{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for p := range 200 {
		l := api.Listener{VIP: ep.IPv4, Port: uint16(1000 + p), Host: "h1", HostIP: h1IP, HostPort: uint16(30000 + p), ContainerID: "c", IfName: "eth0"}
		if _, err := e.st.PutListener(ctx, l, e.lease); err != nil {
			t.Fatal(err)
		}
	}
	x := newAddrIndex(e.v)
	stop := make(chan struct{})
	written := make(chan error, 1)
	go func() {
		for p := 0; ; p = (p + 1) % 200 {
			select {
			case <-stop:
				written <- nil
				return
			default:
			}
			l := api.Listener{VIP: ep.IPv4, Port: uint16(1000 + p), Host: "h1", HostIP: h1IP, HostPort: uint16(30000 + p), ContainerID: "c", IfName: "eth0"}
			if _, err := e.st.PutListener(ctx, l, e.lease); err != nil {
				written <- err
				return
			}
		}
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
			x.rebuild()
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("rebuilds under writes did not finish: deadlock")
	}
	close(stop)
	if err := <-written; err != nil {
		t.Fatal(err)
	}
}
