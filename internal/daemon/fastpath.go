package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/broker"
	"github.com/slimnet/slim/internal/nat"
	"github.com/slimnet/slim/internal/store"
	"golang.org/x/sys/unix"
)

// fastPath is slimd's side of the broker: the views it reads (listeners,
// the switch, containers by namespace) and the ports and records it
// writes.
type fastPath struct {
	d *Daemon

	mu sync.Mutex
	// byNetns maps a netns inode to the local container attached in it;
	// rebuilt when local endpoints change.
	byNetns map[uint64]*broker.Container
	// inode of each endpoint's netns path, so rebuilding stats only new ones.
	inodes map[string]uint64
	lports *listenerPorts

	natTable *nat.Table
	natDirty chan struct{}
	// owned are this host's listeners as the pinned BPF map had them at
	// start; restored tells runNAT that restoring is done (until then it
	// must not make the map or the DNAT table follow a store that may have
	// lost records while slimd was away).
	owned    []bpf.Listener
	restored atomic.Bool
}

func newFastPath(d *Daemon) *fastPath {
	return &fastPath{d: d, byNetns: map[uint64]*broker.Container{}, inodes: map[string]uint64{},
		lports: newListenerPorts(), natDirty: make(chan struct{}, 1)}
}

// FastPath implements broker.View: the cluster-wide switch, on unless set
// off.
func (f *fastPath) FastPath() bool {
	if f.d.bpf == nil {
		// Without the BPF programs applications would see host
		// addresses and host sockets would be unguarded.
		return false
	}
	v, ok := f.d.fpSwitch.Get("")
	return !ok || v.Enabled
}

// Listener implements broker.View: a published listener whose record
// fits its host's (see validator); a forged one is refused, and the
// connect goes to the overlay.
func (f *fastPath) Listener(vip netip.Addr, port uint16) (api.Listener, bool) {
	l, ok := f.d.listeners.Get(store.ListenerKey(vip, port))
	if !ok || l.VIP != vip || l.Port != port || !f.d.valid.listener(l, f) {
		return api.Listener{}, false
	}
	return l, true
}

// ContainerByNetns implements broker.Resolver.
func (f *fastPath) ContainerByNetns(ino uint64) (*broker.Container, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.byNetns[ino]
	return c, ok
}

// rebuild refreshes byNetns from the endpoint cache (local endpoints).
func (f *fastPath) rebuild() {
	eps, _ := f.d.endpoints.Snapshot()
	f.mu.Lock()
	defer f.mu.Unlock()
	byNetns := map[uint64]*broker.Container{}
	inodes := map[string]uint64{}
	for _, ep := range eps {
		if ep.Host != f.d.self.Name || !f.d.valid.endpoint(ep, f.hostRecord) {
			continue
		}
		ino, ok := f.inodes[ep.Netns]
		if !ok {
			var st unix.Stat_t
			if unix.Stat(ep.Netns, &st) != nil {
				continue // netns gone: the container is going away
			}
			ino = st.Ino
		}
		inodes[ep.Netns] = ino
		byNetns[ino] = &broker.Container{ID: ep.ContainerID, IfName: ep.IfName, VIP4: ep.IPv4, VIP6: ep.IPv6}
	}
	f.byNetns, f.inodes = byNetns, inodes
	f.markNAT() // port blocks changed: the BPF maps follow
}

// host implements records: the cached host record and its lease. This
// host's own record is known without the cache, which may not have synced
// yet when the endpoints' has.
func (f *fastPath) host(name string) (api.Host, int64, bool) {
	if name == f.d.self.Name {
		return f.d.self, int64(f.d.lease.ID()), true
	}
	h, ok := f.d.hosts.Get(name)
	return h, f.d.hosts.Lease(name), ok
}

// hostRecord is host without the lease, for the endpoint checks.
func (f *fastPath) hostRecord(name string) (api.Host, bool) {
	h, _, ok := f.host(name)
	return h, ok
}

// listenerLease implements records.
func (f *fastPath) listenerLease(key string) int64 { return f.d.listeners.Lease(key) }

// Blocks implements broker.Ports.
func (f *fastPath) Blocks(c *broker.Container) []api.PortBlock {
	ep, ok := f.d.endpoints.Get(f.d.self.Name + "/" + c.ID + "/" + c.IfName)
	if !ok || !f.d.valid.endpoint(ep, f.hostRecord) {
		return nil
	}
	return ep.PortBlocks
}

// Grow implements broker.Ports: it claims a block and returns once the
// endpoint cache, which Blocks reads, has it (or ctx ends: an error).
func (f *fastPath) Grow(ctx context.Context, c *broker.Container, ipv6 bool) error {
	_, rev, err := f.d.store.AddEndpointBlock(ctx, f.d.self.Name, api.Attachment{ContainerID: c.ID, IfName: c.IfName},
		f.d.cfg.Blocks(), ipv6)
	if err != nil {
		return err
	}
	return f.d.endpoints.WaitRev(ctx, rev)
}

// ListenerPort implements broker.Ports: the lowest free port of the
// host's listener blocks, claiming another block when they are full.
func (f *fastPath) ListenerPort(ctx context.Context) (uint16, error) {
	return f.lports.get(ctx, func(ctx context.Context) (api.PortBlock, error) {
		return f.d.store.ClaimPortBlock(ctx, f.d.self.Name, store.ListenerOwner, f.d.cfg.Blocks())
	})
}

// ReleaseListenerPort implements broker.Ports.
func (f *fastPath) ReleaseListenerPort(p uint16) { f.lports.release(p) }

// cacheWait bounds the wait for our own write to come back through the
// watch: on a healthy store it takes milliseconds.
const cacheWait = 2 * time.Second

// Publish implements broker.Publisher. It returns once this host's cache
// has the listener, so a client in this container that connects right
// after listen() returns finds it; a listener not seen within cacheWait is
// an error (the broker then leaves the listen to the container).
func (f *fastPath) Publish(ctx context.Context, l api.Listener) error {
	l.Host = f.d.self.Name
	rev, err := f.d.store.PutListener(ctx, l, f.d.lease.ID())
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, cacheWait)
	defer cancel()
	if err := f.d.listeners.WaitRev(wctx, rev); err != nil {
		return fmt.Errorf("listener published, not seen: %w", err)
	}
	return nil
}

// Withdraw implements broker.Publisher.
func (f *fastPath) Withdraw(ctx context.Context, vip netip.Addr, port uint16) error {
	return f.d.store.DeleteListener(ctx, f.d.self.Name, vip, port)
}

// localRules are the DNAT rules for listeners on this host.
func (f *fastPath) localRules() []nat.Rule {
	ls, _ := f.d.listeners.Snapshot()
	var rules []nat.Rule
	for _, l := range ls {
		if l.Host != f.d.self.Name || !f.d.valid.listener(l, f) {
			continue
		}
		hostIP := l.HostIP
		if l.VIP.Is6() {
			// The host listener is dual stack on the v4 underlay: IPv6
			// overlay clients are translated to its v4-mapped address.
			hostIP = netip.AddrFrom16(l.HostIP.As16())
		}
		rules = append(rules, nat.Rule{VIP: l.VIP, Port: l.Port, HostIP: hostIP, HostPort: l.HostPort})
	}
	return rules
}

func (f *fastPath) markNAT() {
	select {
	case f.natDirty <- struct{}{}:
	default:
	}
}

// runNAT keeps the DNAT table equal to the local listeners, and the BPF
// address maps equal to the cluster's port blocks and listeners.
func (f *fastPath) runNAT(ctx context.Context) error {
	t := time.NewTicker(f.d.cfg.ResyncInterval)
	defer t.Stop()
	for {
		if f.restored.Load() && f.d.listeners.Synced() && f.d.endpoints.Synced() && f.d.hosts.Synced() {
			if err := f.natTable.Sync(f.localRules()); err != nil {
				f.d.log.Warn("dnat sync failed", "err", err)
			}
			if err := f.natTable.SyncGuard(f.guard()); err != nil {
				f.d.log.Warn("control-plane guard sync failed", "err", err)
			}
			if err := f.syncBPF(); err != nil {
				f.d.log.Warn("bpf map sync failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-f.natDirty:
		case <-t.C:
		}
	}
}

// syncBPF keeps the BPF address maps equal to the store: every endpoint's
// port blocks (keyed by its host's underlay IP) and every listener.
func (f *fastPath) syncBPF() error {
	if f.d.bpf == nil {
		return nil
	}
	hosts, _ := f.d.hosts.Snapshot()
	eps, _ := f.d.endpoints.Snapshot()
	ls, _ := f.d.listeners.Snapshot()
	hostOf := func(name string) (api.Host, bool) { h, ok := hosts[name]; return h, ok }
	want := desiredBPF(hosts, eps, ls,
		func(ep api.Endpoint) bool { return f.d.valid.endpoint(ep, hostOf) },
		func(l api.Listener) bool { return f.d.valid.listener(l, f) })
	return want.apply(f.d.bpf)
}

// listenerList serves GET /v1/listeners.
func (f *fastPath) listenerList(host string) ([]api.Listener, error) {
	ls, synced := f.d.listeners.Snapshot()
	if !synced {
		return nil, fmt.Errorf("%w: listener cache not synced", api.ErrUnavailable)
	}
	out := make([]api.Listener, 0, len(ls))
	for _, l := range ls {
		if host == "" || l.Host == host {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b api.Listener) int {
		if c := a.VIP.Compare(b.VIP); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	return out, nil
}
