package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/broker"
	"github.com/slimnet/slim/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

// fastPathStore is what the broker's side of slimd writes to the store.
type fastPathStore interface {
	AddEndpointBlock(ctx context.Context, host string, a api.Attachment, r store.BlockRange, ipv6 bool) (api.Endpoint, int64, error)
	ClaimPortBlock(ctx context.Context, host, owner string, r store.BlockRange) (api.PortBlock, error)
	PortBlocks(ctx context.Context, host string) (map[uint16]string, error)
	PutListener(ctx context.Context, l api.Listener, lease clientv3.LeaseID) (int64, error)
	DeleteListener(ctx context.Context, host string, vip netip.Addr, vport uint16) error
}

// fastPath is slimd's side of the broker: the views it reads (listeners,
// the switch, containers by namespace) and the ports and records it
// writes.
type fastPath struct {
	v      *view
	store  fastPathStore
	blocks store.BlockRange
	// bpf: the BPF programs are attached. Without them applications would
	// see host addresses and host sockets would be unguarded, so the fast
	// path stays off.
	bpf bool
	// changed is called when local endpoints change (the BPF maps follow).
	changed func()
	log     *slog.Logger

	mu sync.Mutex
	// byNetns maps a netns inode to the local container attached in it;
	// rebuilt when local endpoints change.
	byNetns map[uint64]*broker.Container
	// inode of each endpoint's netns path, so rebuilding stats only new ones.
	inodes map[string]uint64
	lports *listenerPorts
	// services resolves service ports to backends (nil: none).
	services *services
}

func newFastPath(v *view, st fastPathStore, blocks store.BlockRange, bpfLoaded bool, changed func(), log *slog.Logger) *fastPath {
	return &fastPath{v: v, store: st, blocks: blocks, bpf: bpfLoaded, changed: changed, log: log,
		byNetns: map[uint64]*broker.Container{}, inodes: map[string]uint64{}, lports: newListenerPorts()}
}

// FastPath implements broker.View.
func (f *fastPath) FastPath() bool { return f.bpf && f.v.switchOn() }

// Listener implements broker.View: a published listener whose record
// fits its host's (see validator); a forged one is refused, and the
// connect goes to the overlay. A service port gives one of its backends'
// listeners (see services.pick).
func (f *fastPath) Listener(vip netip.Addr, port uint16) (api.Listener, bool) {
	if l, ok := f.listener(vip, port); ok || f.services == nil {
		return l, ok
	}
	l, ok, _ := f.services.pick(vip, port, f.listener)
	return l, ok
}

// IsService implements broker.ServiceView: vip:port is a service's TCP
// port (one without a backend refuses connects at once).
func (f *fastPath) IsService(vip netip.Addr, port uint16) bool {
	return f.services != nil && f.services.of(netip.AddrPortFrom(vip, port)) != ""
}

// listener is the published listener at vip:port.
func (f *fastPath) listener(vip netip.Addr, port uint16) (api.Listener, bool) {
	l, ok := f.v.listeners.Get(store.ListenerKey(vip, port))
	if !ok || l.VIP != vip || l.Port != port || !f.v.validListener(l) {
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
	eps, _ := f.v.endpoints.Snapshot()
	f.mu.Lock()
	defer f.mu.Unlock()
	byNetns := map[uint64]*broker.Container{}
	inodes := map[string]uint64{}
	for _, ep := range eps {
		if ep.Host != f.v.self.Name || !f.v.validEndpoint(ep) {
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
	f.changed()
}

// Blocks implements broker.Ports.
func (f *fastPath) Blocks(c *broker.Container) []api.PortBlock {
	ep, ok := f.v.endpoints.Get(f.v.self.Name + "/" + c.ID + "/" + c.IfName)
	if !ok || !f.v.validEndpoint(ep) {
		return nil
	}
	return ep.PortBlocks
}

// Grow implements broker.Ports: it claims a block and returns once the
// endpoint cache, which Blocks reads, has it (or ctx ends: an error).
func (f *fastPath) Grow(ctx context.Context, c *broker.Container, ipv6 bool) error {
	_, rev, err := f.store.AddEndpointBlock(ctx, f.v.self.Name, api.Attachment{ContainerID: c.ID, IfName: c.IfName}, f.blocks, ipv6)
	if err != nil {
		return err
	}
	return f.v.endpoints.WaitRev(ctx, rev)
}

// ListenerPort implements broker.Ports: the lowest free port of the
// host's listener blocks, claiming another block when they are full.
func (f *fastPath) ListenerPort(ctx context.Context) (uint16, error) {
	return f.lports.get(ctx, func(ctx context.Context) (api.PortBlock, error) {
		return f.store.ClaimPortBlock(ctx, f.v.self.Name, store.ListenerOwner, f.blocks)
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
	l.Host = f.v.self.Name
	rev, err := f.store.PutListener(ctx, l, f.v.lease())
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, cacheWait)
	defer cancel()
	if err := f.v.listeners.WaitRev(wctx, rev); err != nil {
		return fmt.Errorf("listener published, not seen: %w", err)
	}
	return nil
}

// Withdraw implements broker.Publisher.
func (f *fastPath) Withdraw(ctx context.Context, vip netip.Addr, port uint16) error {
	return f.store.DeleteListener(ctx, f.v.self.Name, vip, port)
}
