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
			got[i], errs[i] = s.ClaimPortBlock(ctx, "h1", "c"+string(rune('0'+i))+"/eth0", BlockRange{First: 1000, Last: 2047, Size: 512})
		})
	}
	wg.Wait()
	starts := map[uint16]bool{}
	fails := 0
	for i := range 3 {
		if errs[i] != nil {
			if !errors.Is(errs[i], ErrExhausted) {
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
	if b, err := s.ClaimPortBlock(ctx, "h2", "x/eth0", BlockRange{First: 1000, Last: 2047, Size: 512}); err != nil || b.Start != 1024 {
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
	if b, err := s.ClaimPortBlock(ctx, "h1", "new/eth0", BlockRange{First: 1000, Last: 2047, Size: 512}); err != nil || !starts[b.Start] {
		t.Fatalf("claim after release = %+v, %v", b, err)
	}
	if _, err := s.ClaimPortBlock(ctx, "h1", "bad/eth0", BlockRange{First: 1000, Last: 2047, Size: 300}); err == nil {
		t.Fatal("non-power-of-two block size accepted")
	}
	if !(api.PortBlock{Start: 1024, Size: 512}).Contains(1535) || (api.PortBlock{Start: 1024, Size: 512}).Contains(1536) {
		t.Fatal("PortBlock.Contains")
	}
}

func TestEndpointBlocks(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	hn := HostNet{Host: "h1", Subnet4: netip.MustParsePrefix("10.244.1.0/24")}
	req := api.EndpointRequest{ContainerID: "c1", IfName: "eth0", Netns: "/x"}
	blocks := BlockRange{First: 20480, Last: 32767, Size: 256}
	if _, err := s.AddEndpoint(ctx, hn, req, BlockRange{}, netip.Addr{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	att := api.Attachment{ContainerID: "c1", IfName: "eth0"}
	for i := range 2 {
		ep, _, err := s.AddEndpointBlock(ctx, "h1", att, blocks, false)
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
	if _, _, err := s.AddEndpointBlock(ctx, "h1", api.Attachment{ContainerID: "nope", IfName: "eth0"}, blocks, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("block for absent endpoint: %v", err)
	}
	if err := s.DelEndpoint(ctx, "h1", att); err != nil {
		t.Fatal(err)
	}
	if blocks, _ := s.PortBlocks(ctx, "h1"); len(blocks) != 0 {
		t.Fatalf("DEL left port blocks %v", blocks)
	}
}

func TestBlockRangeFree(t *testing.T) {
	r := BlockRange{First: 1000, Last: 2047, Size: 256}
	for _, tc := range []struct {
		used   []uint16
		want   uint16
		wantOK bool
	}{
		{nil, 1024, true}, // 1000 is not aligned: the first block is 1024
		{[]uint16{1024}, 1280, true},
		{[]uint16{1024, 1280, 1536}, 1792, true},
		{[]uint16{1024, 1280, 1536, 1792}, 0, false}, // 2048 would end past Last
		{[]uint16{1280}, 1024, true},
	} {
		used := map[uint16]bool{}
		for _, u := range tc.used {
			used[u] = true
		}
		got, ok := r.free(used)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("free(%v) = %d, %v; want %d, %v", tc.used, got, ok, tc.want, tc.wantOK)
		}
	}
	// A range ending at the top port must not wrap around.
	top := BlockRange{First: 65024, Last: 65535, Size: 256}
	if got, ok := top.free(map[uint16]bool{65024: true}); !ok || got != 65280 {
		t.Errorf("top range = %d, %v", got, ok)
	}
	if _, ok := top.free(map[uint16]bool{65024: true, 65280: true}); ok {
		t.Error("full top range has a free block")
	}
}

// TestEndpointWithBlocks: an endpoint is created with one block per address
// family in the same transaction; a family without a free block is left
// without one, and the endpoint is still made.
func TestEndpointWithBlocks(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	hn := HostNet{Host: "h1", Subnet4: netip.MustParsePrefix("10.244.1.0/24"), Subnet6: netip.MustParsePrefix("fd00:0:0:1::/64")}
	// Room for three blocks: two for the first endpoint, one for the second.
	blocks := BlockRange{First: 20480, Last: 20480 + 3*256 - 1, Size: 256}
	req := func(id string) api.EndpointRequest {
		return api.EndpointRequest{ContainerID: id, IfName: "eth0", Netns: "/x"}
	}
	ep, err := s.AddEndpoint(ctx, hn, req("c1"), blocks, netip.Addr{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(ep.PortBlocks) != 2 || ep.PortBlocks[0].IPv6 || !ep.PortBlocks[1].IPv6 || ep.PortBlocks[0].Start == ep.PortBlocks[1].Start {
		t.Fatalf("c1 blocks %+v: want one IPv4 and one IPv6 block", ep.PortBlocks)
	}
	claims, _ := s.PortBlocks(ctx, "h1")
	for _, b := range ep.PortBlocks {
		if claims[b.Start] != "c1/eth0" {
			t.Fatalf("block %d claimed by %q", b.Start, claims[b.Start])
		}
	}
	ep2, err := s.AddEndpoint(ctx, hn, req("c2"), blocks, netip.Addr{}, time.Now())
	if err != nil || len(ep2.PortBlocks) != 1 || ep2.PortBlocks[0].IPv6 {
		t.Fatalf("c2 = %+v, %v: want its IPv4 block only", ep2.PortBlocks, err)
	}
	ep3, err := s.AddEndpoint(ctx, hn, req("c3"), blocks, netip.Addr{}, time.Now())
	if err != nil || len(ep3.PortBlocks) != 0 || !ep3.IPv4.IsValid() {
		t.Fatalf("c3 = %+v, %v: want an endpoint without blocks", ep3, err)
	}
	if _, _, err := s.AddEndpointBlock(ctx, "h1", api.Attachment{ContainerID: "c3", IfName: "eth0"}, blocks, false); !errors.Is(err, ErrExhausted) {
		t.Fatalf("block from a full range: %v", err)
	}
	// Re-ADD returns the stored endpoint and claims nothing more.
	again, err := s.AddEndpoint(ctx, hn, req("c1"), blocks, netip.Addr{}, time.Now())
	if err != nil || len(again.PortBlocks) != 2 || again.PortBlocks[0] != ep.PortBlocks[0] {
		t.Fatalf("re-ADD = %+v, %v", again.PortBlocks, err)
	}
	// DEL frees c1's blocks for the next endpoint.
	if err := s.DelEndpoint(ctx, "h1", api.Attachment{ContainerID: "c1", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	ep4, err := s.AddEndpoint(ctx, hn, req("c4"), blocks, netip.Addr{}, time.Now())
	if err != nil || len(ep4.PortBlocks) != 2 {
		t.Fatalf("c4 after DEL = %+v, %v", ep4.PortBlocks, err)
	}
	if _, err := s.AddEndpoint(ctx, hn, req("c5"), BlockRange{First: 20480, Last: 30000, Size: 100}, netip.Addr{}, time.Now()); err == nil {
		t.Fatal("non-power-of-two block size accepted")
	}
}

// TestEndpointBlocksConcurrent: blocks claimed for one endpoint at once
// (the broker grows while the CNI re-ADDs) all land in the endpoint, and
// no block is claimed without being recorded.
func TestEndpointBlocksConcurrent(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	hn := HostNet{Host: "h1", Subnet4: netip.MustParsePrefix("10.244.1.0/24")}
	blocks := BlockRange{First: 20480, Last: 32767, Size: 256}
	if _, err := s.AddEndpoint(ctx, hn, api.EndpointRequest{ContainerID: "c1", IfName: "eth0", Netns: "/x"}, BlockRange{}, netip.Addr{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	att := api.Attachment{ContainerID: "c1", IfName: "eth0"}
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			if _, _, err := s.AddEndpointBlock(ctx, "h1", att, blocks, false); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	ep, _ := s.Endpoint(ctx, "h1", att)
	claims, _ := s.PortBlocks(ctx, "h1")
	if len(ep.PortBlocks) != 6 || len(claims) != 6 {
		t.Fatalf("endpoint has %d blocks, store %d claims; want 6 and 6", len(ep.PortBlocks), len(claims))
	}
	for _, b := range ep.PortBlocks {
		if claims[b.Start] != "c1/eth0" {
			t.Fatalf("block %d claimed by %q", b.Start, claims[b.Start])
		}
	}
}
