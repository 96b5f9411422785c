package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
)

// chooseBlocks takes one family's least used blocks, at most four, in
// order of their first port, and sums what they hold.
func TestChooseBlocks(t *testing.T) {
	blocks := []api.PortBlock{
		{Start: 512, Size: 256}, {Start: 256, Size: 256}, {Start: 1024, Size: 256, IPv6: true},
		{Start: 768, Size: 256}, {Start: 1280, Size: 256}, {Start: 1536, Size: 256}, {Start: 0, Size: 0},
	}
	use := map[uint16]uint32{512: 10, 256: 200, 768: 0, 1280: 5, 1536: 300, 1024: 7}
	inUse := func(s uint16) uint32 { return use[s] }
	for _, tc := range []struct {
		name           string
		blocks         []api.PortBlock
		ipv6           bool
		want           []uint16
		used, capacity uint32
	}{
		{"least used four, sorted", blocks, false, []uint16{256, 512, 768, 1280}, 215, 1024},
		{"ipv6", blocks, true, []uint16{1024}, 7, 256},
		{"none", nil, false, nil, 0, 0},
		{"in use capped at the size", []api.PortBlock{{Start: 1536, Size: 256}}, false, []uint16{1536}, 256, 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			starts, n, used, capacity := chooseBlocks(tc.blocks, tc.ipv6, inUse)
			if got := starts[:n]; !slices.Equal(got, tc.want) || used != tc.used || capacity != tc.capacity {
				t.Errorf("got %v used %d of %d, want %v used %d of %d", got, used, capacity, tc.want, tc.used, tc.capacity)
			}
		})
	}
	if testing.AllocsPerRun(100, func() { chooseBlocks(blocks, false, inUse) }) != 0 {
		t.Error("chooseBlocks allocates")
	}
}

// growingPorts hands out a new block per Grow and counts the calls.
type growingPorts struct {
	mu     sync.Mutex
	blocks []api.PortBlock
	grows  int
}

func (g *growingPorts) Blocks(*Container) []api.PortBlock {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.blocks)
}

func (g *growingPorts) Grow(_ context.Context, _ *Container, ipv6 bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.grows++
	g.blocks = append(g.blocks, api.PortBlock{Start: uint16(256 * (len(g.blocks) + 1)), Size: 256, IPv6: ipv6})
	return nil
}

func (g *growingPorts) ListenerPort(context.Context) (uint16, error) { return 0, nil }
func (g *growingPorts) ReleaseListenerPort(uint16)                   {}

// fakePorts has no blocks and claims none.
type fakePorts struct{}

func (fakePorts) Blocks(*Container) []api.PortBlock { return nil }
func (fakePorts) Grow(context.Context, *Container, bool) error {
	return fmt.Errorf("no free port block: %w", api.ErrExhausted)
}
func (fakePorts) ListenerPort(context.Context) (uint16, error) { return 0, nil }
func (fakePorts) ReleaseListenerPort(uint16)                   {}

// fakePermits reports fixed ports in use per block.
type fakePermits map[uint16]uint32

func (f fakePermits) ArmConn(int, bpf.Conn) error                             { return nil }
func (f fakePermits) ConnState(int) (bpf.ConnState, error)                    { return bpf.ConnNone, nil }
func (f fakePermits) PortsInUse(start uint16) uint32                          { return f[start] }
func (f fakePermits) EnsureListener(netip.Addr, uint16, netip.AddrPort) error { return nil }

// pickBlocks claims a first block synchronously, another in the background
// when the blocks fill up (and leaves it alone while it is new), and sends a
// connect to the overlay when the blocks are full.
func TestPickBlocks(t *testing.T) {
	ports := &growingPorts{}
	inUse := fakePermits{}
	b, err := New(Config{HostIP: netip.MustParseAddr("192.0.2.1"), Ports: ports, Permits: inUse,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	c := &Container{ID: "c1"}
	var conn bpf.Conn
	if r := b.pickBlocks(t.Context(), c, false, &conn); r != "" || conn.NBlocks != 1 || conn.Blocks[0] != 256 || ports.grows != 1 {
		t.Fatalf("first connect: reason %q, blocks %v, grows %d", r, conn.Blocks[:conn.NBlocks], ports.grows)
	}
	// Half in use: still fine, and one more block is claimed meanwhile.
	inUse[256] = 128
	if r := b.pickBlocks(t.Context(), c, false, &conn); r != "" {
		t.Fatalf("blocks filling up: reason %q", r)
	}
	b.wg.Wait()
	if ports.grows != 2 {
		t.Errorf("blocks filling up: %d grows, want 2", ports.grows)
	}
	// The new block is left alone while it is new (remote hosts may not
	// know it yet); the old one still has ports.
	if r := b.pickBlocks(t.Context(), c, false, &conn); r != "" || conn.NBlocks != 1 || conn.Blocks[0] != 256 {
		t.Errorf("with a new block: reason %q, blocks %v; want the old block only", r, conn.Blocks[:conn.NBlocks])
	}
	// The old block full and the new one still new: the overlay, and
	// another claim.
	inUse[256] = 256
	if r := b.pickBlocks(t.Context(), c, false, &conn); r != ReasonNoPorts {
		t.Errorf("blocks full: reason %q, want %q", r, ReasonNoPorts)
	}
	b.wg.Wait()
	// Once no longer new, the block is used.
	b.mu.Lock()
	for k := range b.seenBlocks {
		b.seenBlocks[k] = time.Now().Add(-time.Hour)
	}
	b.mu.Unlock()
	if r := b.pickBlocks(t.Context(), c, false, &conn); r != "" || conn.NBlocks < 2 {
		t.Errorf("after the grace: reason %q, %d blocks", r, conn.NBlocks)
	}
	// No block to be had: the overlay.
	full, err := New(Config{HostIP: netip.MustParseAddr("192.0.2.1"), Ports: fakePorts{}, Permits: inUse, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if r := full.pickBlocks(t.Context(), c, false, &conn); r != ReasonNoPorts {
		t.Errorf("no blocks to claim: reason %q, want %q", r, ReasonNoPorts)
	}
	// IPv6 blocks are claimed apart.
	if r := b.pickBlocks(t.Context(), c, true, &conn); r != "" || conn.NBlocks != 1 {
		t.Errorf("ipv6: reason %q, %d blocks", r, conn.NBlocks)
	}
}
