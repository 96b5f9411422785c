package broker

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
)

// growAt: a container whose chosen blocks have this share of their ports
// bound by live connections (numerator/denominator) gets another block,
// claimed in the background, before its connects run out of ports. Half:
// a new block is usable only after the claim and propagationGrace, and a
// burst of connects must not use up the rest before then (measured: a
// client opening connections back to back used the last quarter of a
// 256-port block, 64 ports, before a new one was usable, and fell back to
// the overlay for the rest of the wait).
const growAtNum, growAtDen = 1, 2

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

// propagationGrace is how long a newly claimed port block is left alone,
// if the container has another with free ports: the block is published in
// the endpoint's record, and a server's host maps a client's source port
// to its virtual address only once its own watch has the record; a
// connection from the block before that would show the server the client
// host's address. Propagation through the store takes milliseconds on a
// healthy cluster.
const propagationGrace = 250 * time.Millisecond

// pickBlocks fills conn's port blocks for a connect of container c. A
// container whose blocks are filling up claims another in the background.
// One with no block of the family (its endpoint was made by an older
// slimd: new endpoints get theirs when created) claims one now, bounded by
// storeCallTimeout, and waits propagationGrace before using it; one whose
// blocks are full goes to the overlay until the claim lands.
func (b *Broker) pickBlocks(ctx context.Context, c *Container, ipv6 bool, conn *bpf.Conn) Reason {
	inUse := b.cfg.Permits.PortsInUse
	usable, pending := b.blocksFor(c, ipv6)
	starts, n, used, capacity := chooseBlocks(usable, ipv6, inUse)
	if n == 0 {
		gctx, cancel := context.WithTimeout(ctx, storeCallTimeout)
		err := b.cfg.Ports.Grow(gctx, c, ipv6)
		cancel()
		if err != nil {
			b.cfg.Metrics.Errors.WithLabelValues("connect", "port_block").Inc()
			b.cfg.Log.Warn("broker: no port block for a container's connections; they use the overlay", "container", c.ID, "err", err)
			return ReasonNoPorts
		}
		b.blocksFor(c, ipv6) // seen now: new from now on
		select {
		case <-time.After(propagationGrace):
		case <-ctx.Done():
			return ReasonNoPorts
		}
		usable, _ = b.blocksFor(c, ipv6)
		if starts, n, used, capacity = chooseBlocks(usable, ipv6, inUse); n == 0 {
			return ReasonNoPorts
		}
	}
	// A block still in its grace is the one the last growth claimed: no
	// other until it is in use, or a burst claims one per connect.
	if !pending && used*growAtDen >= capacity*growAtNum {
		b.growLater(ctx, c, ipv6)
	}
	if used >= capacity {
		return ReasonNoPorts
	}
	conn.Blocks, conn.NBlocks = starts, n
	return ""
}

// blocksFor returns c's port blocks of one family, leaving out those first
// seen less than propagationGrace ago when older ones remain (see
// propagationGrace); pending says some were left out.
func (b *Broker) blocksFor(c *Container, ipv6 bool) (usable []api.PortBlock, pending bool) {
	var all []api.PortBlock
	for _, bl := range b.cfg.Ports.Blocks(c) {
		if bl.IPv6 == ipv6 {
			all = append(all, bl)
		}
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.seenBlocks) > maxSeenBlocks {
		// Blocks of containers long gone: forgetting them only makes a
		// block look new once more.
		clear(b.seenBlocks)
	}
	young := 0
	for _, bl := range all {
		// A block this broker has not seen before counts as new; the
		// blocks of a container it sees for the first time (or after a
		// restart) are all new, and all used.
		k := seenKey{c.ID, bl.Start}
		first, ok := b.seenBlocks[k]
		if !ok {
			first = now
			b.seenBlocks[k] = now
		}
		if now.Sub(first) < propagationGrace {
			young++
		}
	}
	if young == 0 || young == len(all) {
		return all, false
	}
	out := make([]api.PortBlock, 0, len(all)-young)
	for _, bl := range all {
		if now.Sub(b.seenBlocks[seenKey{c.ID, bl.Start}]) >= propagationGrace {
			out = append(out, bl)
		}
	}
	return out, true
}

// seenKey names one block of one container.
type seenKey struct {
	container string
	start     uint16
}

// maxSeenBlocks bounds the blocks remembered by blocksFor.
const maxSeenBlocks = 1 << 14

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
