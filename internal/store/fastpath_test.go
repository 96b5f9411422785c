package store

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
)

func TestPortBlocks(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	// 1000..2047 holds blocks 1024 and 1536 of 512 (1000 is not aligned).
	var wg sync.WaitGroup
	got := make([]api.PortBlock, 3)
	errs := make([]error, 3)
	for i := range 3 {
		wg.Go(func() {
			got[i], errs[i] = s.ClaimPortBlock(ctx, "h1", "c"+string(rune('0'+i))+"/eth0", 1000, 2047, 512)
		})
	}
	wg.Wait()
	starts := map[uint16]bool{}
	fails := 0
	for i := range 3 {
		if errs[i] != nil {
			if !errors.Is(errs[i], api.ErrExhausted) {
				t.Fatalf("claim %d: %v", i, errs[i])
			}
			fails++
			continue
		}
		if got[i].Start%512 != 0 || got[i].Size != 512 || starts[got[i].Start] {
			t.Fatalf("claim %d = %+v (taken %v)", i, got[i], starts)
		}
		starts[got[i].Start] = true
	}
	if fails != 1 || !starts[1024] || !starts[1536] {
		t.Fatalf("blocks %v, %d failures", starts, fails)
	}
	// Another host has its own ports.
	if b, err := s.ClaimPortBlock(ctx, "h2", "x/eth0", 1000, 2047, 512); err != nil || b.Start != 1024 {
		t.Fatalf("h2 claim = %+v, %v", b, err)
	}
	blocks, _ := s.PortBlocks(ctx, "h1")
	var owner string
	for _, o := range blocks {
		owner = o
		break
	}
	if err := s.ReleasePortBlocks(ctx, "h1", owner); err != nil {
		t.Fatal(err)
	}
	if b, err := s.ClaimPortBlock(ctx, "h1", "new/eth0", 1000, 2047, 512); err != nil || !starts[b.Start] {
		t.Fatalf("claim after release = %+v, %v", b, err)
	}
	if _, err := s.ClaimPortBlock(ctx, "h1", "bad/eth0", 1000, 2047, 300); err == nil {
		t.Fatal("non-power-of-two block size accepted")
	}
	if !(api.PortBlock{Start: 1024, Size: 512}).Contains(1535) || (api.PortBlock{Start: 1024, Size: 512}).Contains(1536) {
		t.Fatal("PortBlock.Contains")
	}
}

func TestListeners(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	g, err := s.Client().Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	l := api.Listener{VIP: netip.MustParseAddr("10.244.0.5"), Port: 80, Host: "h1",
		HostIP: netip.MustParseAddr("192.168.77.1"), HostPort: 20480, ContainerID: "c", IfName: "eth0"}
	if _, err := s.PutListener(ctx, l, g.ID); err != nil {
		t.Fatal(err)
	}
	key := s.ListenersPrefix() + ListenerKey(l.VIP, l.Port)
	// Another host does not withdraw h1's listener.
	if err := s.DeleteListener(ctx, "h2", l.VIP, l.Port); err != nil {
		t.Fatal(err)
	}
	if resp, _ := s.Client().Get(ctx, key); len(resp.Kvs) != 1 || resp.Kvs[0].Lease != int64(g.ID) {
		t.Fatalf("listener after foreign delete: %v", resp.Kvs)
	}
	if err := s.DeleteListener(ctx, "h1", l.VIP, l.Port); err != nil {
		t.Fatal(err)
	}
	if resp, _ := s.Client().Get(ctx, key); len(resp.Kvs) != 0 {
		t.Fatal("listener still published")
	}
	// On the lease: revoking it (host gone) withdraws the listener.
	if _, err := s.PutListener(ctx, l, g.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	if resp, _ := s.Client().Get(ctx, key); len(resp.Kvs) != 0 {
		t.Fatal("listener outlived its lease")
	}
	if _, err := s.SetFastPath(ctx, false); err != nil {
		t.Fatal(err)
	}
	if resp, _ := s.Client().Get(ctx, s.FastPathKey()); len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != `{"enabled":false}` {
		t.Fatalf("fast path switch %v", resp.Kvs)
	}
}

func TestEndpointBlocks(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	hn := HostNet{Host: "h1", Subnet4: netip.MustParsePrefix("10.244.1.0/24")}
	req := api.EndpointRequest{ContainerID: "c1", IfName: "eth0", Netns: "/x"}
	if _, err := s.AddEndpoint(ctx, hn, req, netip.Addr{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	att := api.Attachment{ContainerID: "c1", IfName: "eth0"}
	for i := range 2 {
		ep, _, err := s.AddEndpointBlock(ctx, "h1", att, 20480, 32767, 256, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(ep.PortBlocks) != i+1 || ep.PortBlocks[i].Start != uint16(20480+256*i) {
			t.Fatalf("blocks after %d claims: %+v", i+1, ep.PortBlocks)
		}
	}
	if got, _ := s.Endpoint(ctx, "h1", att); len(got.PortBlocks) != 2 {
		t.Fatalf("stored endpoint has %+v", got.PortBlocks)
	}
	if _, _, err := s.AddEndpointBlock(ctx, "h1", api.Attachment{ContainerID: "nope", IfName: "eth0"}, 20480, 32767, 256, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("block for absent endpoint: %v", err)
	}
	if err := s.DelEndpoint(ctx, "h1", att); err != nil {
		t.Fatal(err)
	}
	if blocks, _ := s.PortBlocks(ctx, "h1"); len(blocks) != 0 {
		t.Fatalf("DEL left port blocks %v", blocks)
	}
}
