package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/embedetcd/etcdtest"
	"github.com/slimnet/slim/internal/ipam"
	"github.com/slimnet/slim/internal/poll"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// underRole makes testStore connect over mutual TLS as a user holding
// only the prefix role (TestPrefixRole).
var underRole bool

func testStore(t *testing.T) *Store {
	if !underRole {
		_, cli := etcdtest.New(t)
		return New(cli, "/slimtest")
	}
	m, root := etcdtest.NewTLS(t)
	if err := GrantPrefix(t.Context(), root, "/slimtest", []string{"h1"}); err != nil {
		t.Fatal(err)
	}
	return New(etcdtest.Client(t, m.Server.Endpoint(), m.Issue(t, "h1")), "/slimtest")
}

func defaultConfig() ClusterConfig {
	return ClusterConfig{Cluster4: netip.MustParsePrefix("10.244.0.0/16"), HostBits4: 24, VNI: 1, Port: 4789}
}

func TestEnsureConfig(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	if _, err := s.EnsureConfig(ctx, defaultConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EnsureConfig(ctx, defaultConfig()); err != nil {
		t.Fatalf("same config again: %v", err)
	}
	other := defaultConfig()
	other.VNI = 7
	have, err := s.EnsureConfig(ctx, other)
	if !errors.Is(err, ErrConfigMismatch) {
		t.Fatalf("mismatch: err = %v", err)
	}
	if have.VNI != 1 {
		t.Fatalf("returned stored config %+v", have)
	}
	bad := defaultConfig()
	bad.HostBits4 = 8
	if _, err := s.EnsureConfig(ctx, bad); err == nil {
		t.Fatal("invalid plan accepted")
	}
}

// Concurrent joins never collide on a subnet, and a host that asks again
// gets its own slot back.
func TestClaimSlotConcurrent(t *testing.T) {
	srv, cli := etcdtest.New(t)
	s := New(cli, "/slimtest")
	plan := defaultConfig().Plan()
	const hosts = 32
	slots := make([]int, hosts)
	errs := make([]error, hosts)
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Go(func() {
			// One client per host, as separate slimds would have.
			c, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second})
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close()
			slots[i], errs[i] = New(c, "/slimtest").ClaimSlot(t.Context(), fmt.Sprintf("host%d", i), plan)
		})
	}
	wg.Wait()
	seen := map[int]string{}
	for i := range hosts {
		if errs[i] != nil {
			t.Fatalf("host%d: %v", i, errs[i])
		}
		if prev, dup := seen[slots[i]]; dup {
			t.Fatalf("slot %d given to %s and host%d", slots[i], prev, i)
		}
		seen[slots[i]] = fmt.Sprintf("host%d", i)
	}
	for i := range hosts {
		n, err := s.ClaimSlot(t.Context(), fmt.Sprintf("host%d", i), plan)
		if err != nil || n != slots[i] {
			t.Fatalf("host%d re-claim = %d, %v; want %d", i, n, err, slots[i])
		}
	}
	claims, err := s.Slots(t.Context())
	if err != nil || len(claims) != hosts {
		t.Fatalf("Slots() = %d claims, %v", len(claims), err)
	}
}

func TestClaimSlotExhausted(t *testing.T) {
	s := testStore(t)
	plan := ipam.Plan{Cluster4: netip.MustParsePrefix("10.9.0.0/23"), HostBits4: 24}
	for i := range 2 {
		if _, err := s.ClaimSlot(t.Context(), fmt.Sprintf("h%d", i), plan); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ClaimSlot(t.Context(), "h3", plan); !errors.Is(err, ipam.ErrExhausted) {
		t.Fatalf("third host: %v", err)
	}
	if err := s.ForgetHost(t.Context(), "h0"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ClaimSlot(t.Context(), "h3", plan); err != nil || n != 0 {
		t.Fatalf("after forget: %d, %v", n, err)
	}
}

func TestEndpoints(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	hn := HostNet{Host: "h1", Subnet4: netip.MustParsePrefix("10.244.1.0/28"), Subnet6: netip.MustParsePrefix("fd00:0:0:1::/64")}
	req := func(id string) api.EndpointRequest {
		return api.EndpointRequest{ContainerID: id, IfName: "eth0", Netns: "/run/netns/" + id, Labels: map[string]string{"app": id}}
	}
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			ep, err := s.AddEndpoint(ctx, hn, req(fmt.Sprintf("c%d", i)), BlockRange{}, netip.Addr{}, time.Now())
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if prev, dup := got[ep.IPv4]; dup {
				t.Errorf("%v given to %s and c%d", ep.IPv4, prev, i)
			}
			got[ep.IPv4] = ep.ContainerID
			if ep.IPv6 != ipam.Pair(ep.IPv4, hn.Subnet4, hn.Subnet6) {
				t.Errorf("v6 %v does not pair with %v", ep.IPv6, ep.IPv4)
			}
		})
	}
	wg.Wait()
	// Idempotent ADD.
	again, err := s.AddEndpoint(ctx, hn, req("c3"), BlockRange{}, netip.Addr{}, time.Now())
	if err != nil || got[again.IPv4] != "c3" {
		t.Fatalf("re-ADD of c3 = %+v, %v", again, err)
	}
	// A /28 has 14 usable addresses: 4 more fit, then exhaustion.
	for i := 10; i < 14; i++ {
		if _, err := s.AddEndpoint(ctx, hn, req(fmt.Sprintf("c%d", i)), BlockRange{}, netip.Addr{}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AddEndpoint(ctx, hn, req("c99"), BlockRange{}, netip.Addr{}, time.Now()); !errors.Is(err, ErrExhausted) {
		t.Fatalf("full subnet: %v", err)
	}
	att := api.Attachment{ContainerID: "c3", IfName: "eth0"}
	if err := s.DelEndpoint(ctx, "h1", att); err != nil {
		t.Fatal(err)
	}
	if err := s.DelEndpoint(ctx, "h1", att); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	if _, err := s.Endpoint(ctx, "h1", att); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted endpoint still readable: %v", err)
	}
	// The released address is usable again.
	ep, err := s.AddEndpoint(ctx, hn, req("c99"), BlockRange{}, netip.Addr{}, time.Now())
	if err != nil || ep.IPv4 != again.IPv4 {
		t.Fatalf("reuse after release = %+v, %v (want %v)", ep, err, again.IPv4)
	}
	eps, err := s.Endpoints(ctx, "h1")
	if err != nil || len(eps) != 14 {
		t.Fatalf("Endpoints = %d, %v", len(eps), err)
	}
}

func TestCache(t *testing.T) {
	s := testStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	changes := make(chan struct{}, 100)
	c := s.HostCache(slog.New(slog.DiscardHandler), func() {
		select {
		case changes <- struct{}{}:
		default:
		}
	})
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	poll.Until(t, 5*time.Second, func() error {
		if !c.Synced() {
			return errors.New("not synced")
		}
		return nil
	})
	g, err := s.Client().Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	h := api.Host{Name: "h2", UnderlayIP: netip.MustParseAddr("192.168.77.2"), Subnet4: netip.MustParsePrefix("10.244.2.0/24")}
	if err := s.PutHost(ctx, h, g.ID); err != nil {
		t.Fatal(err)
	}
	// A corrupt record is skipped, not fatal.
	if _, err := s.Client().Put(ctx, s.HostsPrefix()+"junk", "{not json"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		if v, ok := c.Get("h2"); !ok || v.Subnet4 != h.Subnet4 {
			return fmt.Errorf("h2 = %+v %v", v, ok)
		}
		return nil
	})
	if _, ok := c.Get("junk"); ok {
		t.Fatal("corrupt record cached")
	}
	// WaitRev: a write's revision is reached once the cache has it, and a
	// revision that never comes ends with the context's error.
	resp, err := s.Client().Put(ctx, s.HostsPrefix()+"h3", `{"name":"h3"}`)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	if err := c.WaitRev(wctx, resp.Header.Revision); err != nil {
		t.Fatalf("WaitRev of a write: %v", err)
	}
	wcancel()
	if _, ok := c.Get("h3"); !ok || c.Rev() < resp.Header.Revision {
		t.Fatalf("after WaitRev: h3 cached %v, revision %d < %d", ok, c.Rev(), resp.Header.Revision)
	}
	wctx, wcancel = context.WithTimeout(ctx, 100*time.Millisecond)
	if err := c.WaitRev(wctx, resp.Header.Revision+1000); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRev of a future revision: %v, want the deadline", err)
	}
	wcancel()
	// Lease revocation removes the host.
	if _, err := s.Client().Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		if _, ok := c.Get("h2"); ok {
			return errors.New("h2 still cached")
		}
		return nil
	})
	if len(changes) == 0 {
		t.Fatal("onChange never called")
	}
}

// A watch that falls behind compaction re-lists at a fresh revision.
func TestCacheResyncAfterCompaction(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	c := s.HostCache(slog.New(slog.DiscardHandler), nil)
	resyncs := 0
	var mu sync.Mutex
	c.OnResync = func() { mu.Lock(); resyncs++; mu.Unlock() }
	// Write, then compact past it, then start a watch from an old
	// revision by driving listAndWatch's error path directly: the watch
	// at a compacted revision must fail with ErrCompacted.
	r1, err := s.Client().Put(ctx, s.HostsPrefix()+"a", `{"name":"a"}`)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := s.Client().Put(ctx, s.HostsPrefix()+"b", fmt.Sprintf(`{"name":"b","mtu":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	cur, _ := s.Client().Get(ctx, "x")
	if _, err := s.Client().Compact(ctx, cur.Header.Revision); err != nil {
		t.Fatal(err)
	}
	wc := s.Client().Watch(ctx, s.HostsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(r1.Header.Revision+1))
	wr := <-wc
	if !errors.Is(wr.Err(), rpctypes.ErrCompacted) {
		t.Fatalf("watch at compacted revision: %v", wr.Err())
	}
	// The cache itself lists at the current revision, so it sees b's
	// latest value regardless of compaction.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go c.Run(rctx)
	poll.Until(t, 5*time.Second, func() error {
		if v, ok := c.Get("b"); !ok || v.MTU != 4 {
			return fmt.Errorf("b = %+v %v", v, ok)
		}
		return nil
	})
}

func TestLeaseReuseAndRecovery(t *testing.T) {
	s := testStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	file := filepath.Join(t.TempDir(), "lease")
	h := api.Host{Name: "h1", UnderlayIP: netip.MustParseAddr("192.168.77.1"), Subnet4: netip.MustParsePrefix("10.244.1.0/24")}
	newLease := func() *Lease {
		return NewLease(LeaseConfig{Client: s.Client(), TTL: 3 * time.Second, File: file, Log: slog.New(slog.DiscardHandler),
			Attach: func(ctx context.Context, id clientv3.LeaseID) error { return s.PutHost(ctx, h, id) }})
	}
	l1 := newLease()
	if err := l1.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	first := l1.ID()
	// A restarted slimd takes the live lease back.
	l2 := newLease()
	if err := l2.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if l2.ID() != first {
		t.Fatalf("restart got lease %x, want %x", l2.ID(), first)
	}
	go l2.Run(ctx)
	// Losing the lease (revoked here) makes Run grant a new one and
	// re-attach the host record.
	if _, err := s.Client().Revoke(ctx, first); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		resp, err := s.Client().Get(ctx, s.hostKey("h1"))
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || resp.Kvs[0].Lease == int64(first) || resp.Kvs[0].Lease == 0 {
			return fmt.Errorf("host record %v", resp.Kvs)
		}
		return nil
	})
}

// LabelEndpoint changes the pod labels and keeps the rest of the record;
// the runtime's labels, a bad label and a missing endpoint are refused
// and change nothing.
func TestLabelEndpoint(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	hn := HostNet{Host: "h1", Subnet4: netip.MustParsePrefix("10.244.1.0/24")}
	att := api.Attachment{ContainerID: "c1", IfName: "eth0"}
	ep, err := s.AddEndpoint(ctx, hn, api.EndpointRequest{ContainerID: "c1", IfName: "eth0", Netns: "/x",
		Labels: map[string]string{api.LabelPodNamespace: "x", "app": "web", "tier": "front"}},
		BlockRange{First: 20480, Last: 32767, Size: 256}, netip.Addr{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got, rev, err := s.LabelEndpoint(ctx, "h1", att, api.LabelChange{Set: map[string]string{"app": "api", "team": "blue"}, Remove: []string{"tier"}})
	if err != nil || rev == 0 {
		t.Fatalf("LabelEndpoint: %v (rev %d)", err, rev)
	}
	want := map[string]string{api.LabelPodNamespace: "x", "app": "api", "team": "blue"}
	if !maps.Equal(got.Labels, want) || got.IPv4 != ep.IPv4 || !slices.Equal(got.PortBlocks, ep.PortBlocks) {
		t.Errorf("after the change: %+v, want labels %v and the rest as %+v", got, want, ep)
	}
	for _, bad := range []api.LabelChange{
		{Remove: []string{api.LabelPodNamespace}},
		{Set: map[string]string{api.LabelPodName: "other"}},
		{Set: map[string]string{"bad key!": "v"}},
	} {
		if _, _, err := s.LabelEndpoint(ctx, "h1", att, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", bad, err)
		}
	}
	if _, _, err := s.LabelEndpoint(ctx, "h1", api.Attachment{ContainerID: "gone", IfName: "eth0"}, api.LabelChange{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing endpoint: %v, want ErrNotFound", err)
	}
	stored, err := s.Endpoint(ctx, "h1", att)
	if err != nil || !maps.Equal(stored.Labels, want) {
		t.Errorf("stored: %+v, %v; want labels %v (the refused changes changed nothing)", stored.Labels, err, want)
	}
}

// A list larger than a page reads every key at one revision, and a watch
// that ends resumes from the revision the cache applied: what changed
// meanwhile arrives as events, without a list. Only a compacted revision
// needs a list again.
func TestCachePagesAndResumes(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	n := listPage*2 + 7
	for i := 0; i < n; i += 100 {
		ops := []clientv3.Op{}
		for j := i; j < min(i+100, n); j++ {
			ops = append(ops, clientv3.OpPut(s.HostsPrefix()+fmt.Sprintf("h%05d", j), fmt.Sprintf(`{"name":"h%05d"}`, j)))
		}
		if _, err := s.Client().Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	c := s.HostCache(slog.New(slog.DiscardHandler), nil)
	var events []string
	c.OnEvent = func(k string, deleted bool) { events = append(events, fmt.Sprintf("%s %t", k, deleted)) }
	if err := c.list(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Len() != n || c.ListedBytes() == 0 {
		t.Fatalf("listed %d keys (%d bytes), want %d", c.Len(), c.ListedBytes(), n)
	}
	listedAt := c.Rev()
	// Changes while no watch runs (a lost connection).
	if _, err := s.Client().Put(ctx, s.HostsPrefix()+"new", `{"name":"new"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Delete(ctx, s.HostsPrefix()+"h00003"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := c.watch(wctx); done <- err }()
	poll.Until(t, 5*time.Second, func() error {
		if _, ok := c.Get("new"); !ok || c.Len() != n {
			return fmt.Errorf("after resume: %d keys, new present %v", c.Len(), ok)
		}
		return nil
	})
	cancel()
	<-done
	if c.Rev() <= listedAt || !slices.Equal(events, []string{"new false", "h00003 true"}) {
		t.Fatalf("resumed at %d (listed %d), events %v", c.Rev(), listedAt, events)
	}
	// Compacted past the cache's revision: the watch says so, and Run
	// lists again.
	for _, k := range []string{"late1", "late2"} {
		if _, err := s.Client().Put(ctx, s.HostsPrefix()+k, `{"name":"late"}`); err != nil {
			t.Fatal(err)
		}
	}
	cur, _ := s.Client().Get(ctx, s.HostsPrefix()+"late2")
	if _, err := s.Client().Compact(ctx, cur.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if _, err := c.watch(ctx); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("watch from a compacted revision: %v", err)
	}
}
