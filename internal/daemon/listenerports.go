package daemon

import (
	"context"
	"slices"
	"sync"

	"github.com/slimnet/slim/internal/api"
)

// listenerPorts hands out the host ports that host listeners bind: ports
// of the blocks this host claimed for listeners (store.ListenerOwner).
type listenerPorts struct {
	mu     sync.Mutex
	blocks []api.PortBlock // sorted by start
	inUse  map[uint16]bool
}

func newListenerPorts() *listenerPorts { return &listenerPorts{inUse: map[uint16]bool{}} }

// take returns the lowest free port of the blocks, marked in use, or false
// when every port is taken.
func (lp *listenerPorts) take() (uint16, bool) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	for _, b := range lp.blocks {
		for i := range uint32(b.Size) {
			if p := b.Start + uint16(i); !lp.inUse[p] {
				lp.inUse[p] = true
				return p, true
			}
		}
	}
	return 0, false
}

// addBlock adds a claimed block; a block already known is not added twice.
func (lp *listenerPorts) addBlock(b api.PortBlock) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if i, found := slices.BinarySearchFunc(lp.blocks, b.Start, func(x api.PortBlock, s uint16) int { return int(x.Start) - int(s) }); !found {
		lp.blocks = slices.Insert(lp.blocks, i, b)
	}
}

// use marks p in use (a listener restored from a predecessor).
func (lp *listenerPorts) use(p uint16) {
	lp.mu.Lock()
	lp.inUse[p] = true
	lp.mu.Unlock()
}

func (lp *listenerPorts) release(p uint16) {
	lp.mu.Lock()
	delete(lp.inUse, p)
	lp.mu.Unlock()
}

// get returns a free port, claiming another block with claim when every
// port is taken. claim is called without the lock: a slow store must not
// stall the other listens. Two listens claiming at once may claim a block
// each; both get used.
func (lp *listenerPorts) get(ctx context.Context, claim func(context.Context) (api.PortBlock, error)) (uint16, error) {
	for {
		if p, ok := lp.take(); ok {
			return p, nil
		}
		b, err := claim(ctx)
		if err != nil {
			return 0, err
		}
		lp.addBlock(b)
	}
}
