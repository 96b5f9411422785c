package broker

import (
	"cmp"
	"context"
	"slices"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
)

// growAt: a container whose chosen blocks have this share of their ports
// bound by live connections (numerator/denominator) gets another block,
// claimed in the background, before its connects run out of ports.
const growAtNum, growAtDen = 3, 4

// chooseBlocks picks up to bpf.MaxBlocks of a container's port blocks of
// one family (ipv6) for a connect: those with the fewest ports in use
// (inUse reads the connect program's counters), in order of their first
// port, so that while the set stays the same the blocks' shared cursor
// stays in one place. It returns their first ports, how many, and their
// ports in use and capacity together.
func chooseBlocks(blocks []api.PortBlock, ipv6 bool, inUse func(start uint16) uint32) (starts [bpf.MaxBlocks]uint16, n int, used, capacity uint32) {
	type cand struct {
		b    api.PortBlock
		used uint32
	}
	var best [bpf.MaxBlocks]cand
	for _, b := range blocks {
		if b.IPv6 != ipv6 || b.Size == 0 {
			continue
		}
		c := cand{b, inUse(b.Start)}
		if n < len(best) {
			best[n] = c
			n++
			continue
		}
		// Replace the busiest chosen block if this one is less busy.
		worst := 0
		for i := 1; i < n; i++ {
			if best[i].used > best[worst].used {
				worst = i
			}
		}
		if c.used < best[worst].used {
			best[worst] = c
		}
	}
	chosen := best[:n]
	slices.SortFunc(chosen, func(a, b cand) int { return cmp.Compare(a.b.Start, b.b.Start) })
	for i, c := range chosen {
		starts[i] = c.b.Start
		used += min(c.used, uint32(c.b.Size))
		capacity += uint32(c.b.Size)
	}
	return starts, n, used, capacity
}

// pickBlocks fills conn's port blocks for a connect of container c. A
// container whose blocks are filling up claims another in the background;
// one without blocks of the family, or whose blocks are full, claims one
// now, bounded by storeCallTimeout (the application waits), and goes to
// the overlay if that fails.
func (b *Broker) pickBlocks(ctx context.Context, c *Container, ipv6 bool, conn *bpf.Conn) Reason {
	inUse := b.cfg.Permits.PortsInUse
	starts, n, used, capacity := chooseBlocks(b.cfg.Ports.Blocks(c), ipv6, inUse)
	if n == 0 || used >= capacity {
		gctx, cancel := context.WithTimeout(ctx, storeCallTimeout)
		err := b.cfg.Ports.Grow(gctx, c, ipv6)
		cancel()
		if err != nil {
			b.cfg.Metrics.Errors.WithLabelValues("connect", "port_block").Inc()
			b.cfg.Log.Warn("broker: no port block for a container's connections; they use the overlay", "container", c.ID, "err", err)
			return ReasonNoPorts
		}
		if starts, n, used, capacity = chooseBlocks(b.cfg.Ports.Blocks(c), ipv6, inUse); n == 0 {
			return ReasonNoPorts
		}
	}
	if used*growAtDen >= capacity*growAtNum {
		b.growLater(ctx, c, ipv6)
	}
	if used >= capacity {
		return ReasonNoPorts
	}
	conn.Blocks, conn.NBlocks = starts, n
	return ""
}

// growLater claims another port block for c in the background, once at a
// time per container and family.
func (b *Broker) growLater(ctx context.Context, c *Container, ipv6 bool) {
	key := growKey{c.ID, ipv6}
	b.mu.Lock()
	if b.growing[key] {
		b.mu.Unlock()
		return
	}
	b.growing[key] = true
	b.mu.Unlock()
	b.wg.Go(func() {
		defer func() {
			b.mu.Lock()
			delete(b.growing, key)
			b.mu.Unlock()
		}()
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeCallTimeout)
		defer cancel()
		if err := b.cfg.Ports.Grow(gctx, c, ipv6); err != nil {
			b.cfg.Metrics.Errors.WithLabelValues("connect", "port_block").Inc()
			b.cfg.Log.Warn("broker: claiming another port block failed", "container", c.ID, "ipv6", ipv6, "err", err)
			return
		}
		b.cfg.Log.Debug("broker: port blocks filling up, claimed another", "container", c.ID, "ipv6", ipv6)
	})
}

// growKey names one container's blocks of one family.
type growKey struct {
	container string
	ipv6      bool
}
