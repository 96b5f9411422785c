package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/broker"
	"github.com/slimnet/slim/internal/embedetcd/etcdtest"
	"github.com/slimnet/slim/internal/poll"
	"github.com/slimnet/slim/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fpEnv is a fast path over a real (embedded) store and running caches,
// for host h1 at 192.168.77.1 with subnet 10.244.1.0/24.
type fpEnv struct {
	st    *store.Store
	cli   *clientv3.Client
	v     *view
	lease clientv3.LeaseID
	marks int
}

var testBlocks = store.BlockRange{First: 20480, Last: 32767, Size: 256}

func newFPEnv(t *testing.T) *fpEnv {
	t.Helper()
	_, cli := etcdtest.New(t)
	st := store.New(cli, "/slimtest")
	ctx := t.Context()
	g, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	cc := store.ClusterConfig{Cluster4: netip.MustParsePrefix("10.244.0.0/16"), HostBits4: 24, VNI: 1, Port: 4789}
	self := api.Host{Name: "h1", UnderlayIP: h1IP, Subnet4: netip.MustParsePrefix("10.244.1.0/24"), VTEPMAC: "02:00:00:00:00:01"}
	if err := st.PutHost(ctx, self, g.ID); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refused"}, []string{"kind"})
	e := &fpEnv{st: st, cli: cli, lease: g.ID}
	e.v = &view{
		self:      self,
		lease:     func() clientv3.LeaseID { return g.ID },
		hosts:     st.HostCache(log, nil),
		endpoints: st.EndpointCache("", log, nil),
		listeners: st.ListenerCache(log, nil),
		fpSwitch:  st.FastPathCache(log, nil),
		valid:     newValidator(store.Limits{Config: cc, PortFirst: testBlocks.First, PortLast: testBlocks.Last}, log, refused),
	}
	for _, run := range []func(context.Context) error{e.v.hosts.Run, e.v.endpoints.Run, e.v.listeners.Run, e.v.fpSwitch.Run} {
		go run(ctx)
	}
	poll.Until(t, 10*time.Second, func() error {
		if !e.v.synced() || !e.v.fpSwitch.Synced() {
			return errors.New("caches not synced")
		}
		return nil
	})
	return e
}

func (e *fpEnv) fastPath(bpfLoaded bool) *fastPath {
	return newFastPath(e.v, e.st, testBlocks, bpfLoaded, func() { e.marks++ }, slog.New(slog.DiscardHandler))
}

func TestFastPathSwitch(t *testing.T) {
	e := newFPEnv(t)
	if e.fastPath(false).FastPath() {
		t.Fatal("fast path on without the BPF programs")
	}
	f := e.fastPath(true)
	if !f.FastPath() {
		t.Fatal("fast path off with the switch absent")
	}
	rev, err := e.st.SetFastPath(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.v.fpSwitch.WaitRev(t.Context(), rev); err != nil {
		t.Fatal(err)
	}
	if f.FastPath() {
		t.Fatal("fast path on with the switch off")
	}
}

// TestPublishListener: a published listener is visible as soon as Publish
// returns; one forged on another lease is not; ports come from claimed
// blocks and a restarted fast path does not hand out a published port.
func TestPublishListener(t *testing.T) {
	e := newFPEnv(t)
	ctx := t.Context()
	f := e.fastPath(true)
	p1, err := f.ListenerPort(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p1 != testBlocks.First {
		t.Fatalf("first listener port %d, want %d (the first block)", p1, testBlocks.First)
	}
	l := api.Listener{VIP: netip.MustParseAddr("10.244.1.5"), Port: 80, HostIP: h1IP, HostPort: p1, ContainerID: "web", IfName: "eth0"}
	if err := f.Publish(ctx, l); err != nil {
		t.Fatal(err)
	}
	got, ok := f.Listener(l.VIP, 80)
	if !ok || got.Host != "h1" || got.HostPort != p1 {
		t.Fatalf("Listener right after Publish = %+v, %v", got, ok)
	}
	// A record on another lease (not written by h1's slimd) is refused.
	other, _ := e.cli.Grant(ctx, 60)
	forged := l
	forged.Port, forged.Host = 443, "h1"
	rev, err := e.st.PutListener(ctx, forged, other.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.v.listeners.WaitRev(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Listener(l.VIP, 443); ok {
		t.Fatal("a listener on a foreign lease was accepted")
	}
	// A successor restores the listener block and the published port.
	f2 := e.fastPath(true)
	if err := f2.restore(ctx); err != nil {
		t.Fatal(err)
	}
	p2, err := f2.ListenerPort(ctx)
	if err != nil || p2 != p1+1 {
		t.Fatalf("port after restore = %d, %v; want %d", p2, err, p1+1)
	}
	if claims, _ := e.st.PortBlocks(ctx, "h1"); len(claims) != 1 {
		t.Fatalf("restore claimed more blocks: %v", claims)
	}
	if err := f.Withdraw(ctx, l.VIP, 80); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		if _, ok := f.Listener(l.VIP, 80); ok {
			return errors.New("withdrawn listener still visible")
		}
		return nil
	})
}

// TestGrowBlocks: Grow returns once Blocks, which the broker reads next,
// has the new block.
func TestGrowBlocks(t *testing.T) {
	e := newFPEnv(t)
	ctx := t.Context()
	hn := store.HostNet{Host: "h1", Subnet4: e.v.self.Subnet4}
	ep, err := e.st.AddEndpoint(ctx, hn, api.EndpointRequest{ContainerID: "c1", IfName: "eth0", Netns: "/nonexistent"}, testBlocks, netip.Addr{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f := e.fastPath(true)
	c := &broker.Container{ID: "c1", IfName: "eth0", VIP4: ep.IPv4}
	poll.Until(t, 5*time.Second, func() error {
		if n := len(f.Blocks(c)); n != 1 {
			return fmt.Errorf("%d blocks cached, want 1", n)
		}
		return nil
	})
	for want := 2; want <= 3; want++ {
		if err := f.Grow(ctx, c, false); err != nil {
			t.Fatal(err)
		}
		if n := len(f.Blocks(c)); n != want {
			t.Fatalf("Blocks right after Grow: %d, want %d", n, want)
		}
	}
	// The netns path does not exist: the container is not resolvable.
	f.update()
	if len(f.byNetns) != 0 || e.marks != 1 {
		t.Fatalf("update: %d containers, %d marks", len(f.byNetns), e.marks)
	}
}

// TestRestoreListeners: a listener only the pinned map remembers, whose
// host socket still listens, is published again and handed to the broker.
func TestRestoreListeners(t *testing.T) {
	e := newFPEnv(t)
	ctx := t.Context()
	hn := store.HostNet{Host: "h1", Subnet4: e.v.self.Subnet4}
	ep, err := e.st.AddEndpoint(ctx, hn, api.EndpointRequest{ContainerID: "web", IfName: "eth0", Netns: "/x"}, store.BlockRange{}, netip.Addr{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		if e.v.endpoints.Len() != 1 {
			return errors.New("endpoint not cached")
		}
		return nil
	})
	// The "host socket": a loopback listener; its port stands for the
	// listener's host port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	owned := []bpf.Listener{{HostIP: h1IP, HostPort: port, VIP: netip.AddrPortFrom(ep.IPv4, 8080)}}
	f := e.fastPath(true)
	var took []api.Listener
	if err := f.restoreListeners(ctx, owned, func(l api.Listener) { took = append(took, l) }); err != nil {
		t.Fatal(err)
	}
	if len(took) != 1 || took[0].HostPort != port || took[0].ContainerID != "web" {
		t.Fatalf("handed to the broker: %+v", took)
	}
	ls, err := e.st.Client().Get(ctx, e.st.ListenersPrefix(), clientv3.WithPrefix())
	if err != nil || len(ls.Kvs) != 1 || ls.Kvs[0].Lease != int64(e.lease) {
		t.Fatalf("re-published records: %v, %v", ls.Kvs, err)
	}
}
