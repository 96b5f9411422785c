package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
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
	// byNetns maps a netns inode to the local container attached in it,
	// kept from the endpoint cache's changes (update).
	byNetns map[uint64]*broker.Container
	// local are this host's endpoints that byNetns holds, by cache key.
	local   map[string]localEndpoint
	changes *store.Changes[api.Endpoint]
	lports  *listenerPorts
	// services resolves service ports to backends (nil: none).
	services *services
}

func newFastPath(v *view, st fastPathStore, blocks store.BlockRange, bpfLoaded bool, changed func(), log *slog.Logger) *fastPath {
	return &fastPath{v: v, store: st, blocks: blocks, bpf: bpfLoaded, changed: changed, log: log,
		byNetns: map[uint64]*broker.Container{}, local: map[string]localEndpoint{}, changes: v.endpoints.Track(),
		lports: newListenerPorts()}
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

// localEndpoint is a local endpoint as byNetns has it.
type localEndpoint struct {
	netns string
	ino   uint64
	c     *broker.Container
}

// update applies the endpoint cache's changes to byNetns. Only this host's
// endpoints matter, so a change elsewhere in the cluster costs a prefix
// test; it runs in the cache's goroutine, so byNetns has an endpoint
// before anyone waiting on the cache's revision learns it is there.
func (f *fastPath) update() {
	prefix := f.v.self.Name + "/"
	type change struct {
		key string
		ep  api.Endpoint
		ok  bool
	}
	var changes []change
	reset := false
	f.v.endpoints.Drain(f.changes, func() { reset = true }, func(k string, _ api.Endpoint, _ bool, ep api.Endpoint, ok bool) {
		if strings.HasPrefix(k, prefix) {
			changes = append(changes, change{k, ep, ok})
		}
	})
	if !reset && len(changes) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if reset {
		// Everything listed again: what is not in the cache is gone.
		listed := make(map[string]bool, len(changes))
		for _, c := range changes {
			listed[c.key] = true
		}
		for k := range f.local {
			if !listed[k] {
				f.setLocked(k, api.Endpoint{}, false)
			}
		}
	}
	for _, c := range changes {
		f.setLocked(c.key, c.ep, c.ok)
	}
	f.changed()
}

// setLocked makes byNetns follow one local endpoint record (ok false:
// deleted); mu is held.
func (f *fastPath) setLocked(key string, ep api.Endpoint, ok bool) {
	old, had := f.local[key]
	if ok && (ep.Host != f.v.self.Name || !f.v.validEndpoint(ep)) {
		ok = false
	}
	le := localEndpoint{netns: ep.Netns, ino: old.ino}
	if ok && (!had || old.netns != ep.Netns) {
		var st unix.Stat_t
		if unix.Stat(ep.Netns, &st) != nil {
			ok = false // netns gone: the container is going away
		}
		le.ino = st.Ino
	}
	if had && (!ok || old.ino != le.ino) {
		delete(f.local, key)
		if f.byNetns[old.ino] == old.c {
			delete(f.byNetns, old.ino)
			// Another endpoint in the same netns (a second interface)
			// takes its place.
			for _, o := range f.local {
				if o.ino == old.ino {
					f.byNetns[o.ino] = o.c
				}
			}
		}
	}
	if !ok {
		return
	}
	le.c = &broker.Container{ID: ep.ContainerID, IfName: ep.IfName, VIP4: ep.IPv4, VIP6: ep.IPv6}
	f.local[key] = le
	f.byNetns[le.ino] = le.c
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
