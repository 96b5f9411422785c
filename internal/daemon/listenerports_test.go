package daemon

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/slimnet/slim/internal/api"
)

func TestListenerPorts(t *testing.T) {
	lp := newListenerPorts()
	var claims []api.PortBlock
	next := []api.PortBlock{{Start: 30000, Size: 2}, {Start: 65534, Size: 2}}
	claim := func(context.Context) (api.PortBlock, error) {
		if len(next) == 0 {
			return api.PortBlock{}, errors.New("no free port block")
		}
		b := next[0]
		next = next[1:]
		claims = append(claims, b)
		return b, nil
	}
	var got []uint16
	for range 4 {
		p, err := lp.get(t.Context(), claim)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p)
	}
	// The block at the top of the port space does not wrap to port 0.
	if want := []uint16{30000, 30001, 65534, 65535}; !slices.Equal(got, want) || len(claims) != 2 {
		t.Fatalf("ports %v after %d claims; want %v after 2", got, len(claims), want)
	}
	if _, err := lp.get(t.Context(), claim); err == nil {
		t.Fatal("no error with every port taken and no block left")
	}
	lp.release(30001)
	if p, err := lp.get(t.Context(), claim); err != nil || p != 30001 {
		t.Fatalf("after release: %d, %v", p, err)
	}
	// A restored block and a restored port: the port is not handed out.
	lp2 := newListenerPorts()
	lp2.addBlock(api.PortBlock{Start: 40000, Size: 4})
	lp2.addBlock(api.PortBlock{Start: 32000, Size: 4})
	lp2.addBlock(api.PortBlock{Start: 32000, Size: 4})
	lp2.use(32000)
	if p, ok := lp2.take(); !ok || p != 32001 {
		t.Fatalf("restored ports: took %d, %v; want 32001", p, ok)
	}
	if len(lp2.blocks) != 2 {
		t.Fatalf("blocks %v: a block added twice", lp2.blocks)
	}
}

func TestListenerPortsConcurrent(t *testing.T) {
	lp := newListenerPorts()
	var mu sync.Mutex
	start := uint16(20480)
	claim := func(context.Context) (api.PortBlock, error) {
		mu.Lock()
		defer mu.Unlock()
		b := api.PortBlock{Start: start, Size: 8}
		start += 8
		return b, nil
	}
	var wg sync.WaitGroup
	seen := make(chan uint16, 100)
	for range 100 {
		wg.Go(func() {
			p, err := lp.get(t.Context(), claim)
			if err != nil {
				t.Error(err)
			}
			seen <- p
		})
	}
	wg.Wait()
	close(seen)
	dup := map[uint16]bool{}
	for p := range seen {
		if dup[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		dup[p] = true
	}
}
