package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/broker"
	"github.com/slimnet/slim/internal/cgroupfs"
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
	// listener ports in use, and this host's listener blocks.
	lports  map[uint16]bool
	lblocks []api.PortBlock

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
		lports: map[uint16]bool{}, natDirty: make(chan struct{}, 1)}
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
	for {
		f.mu.Lock()
		for _, b := range f.lblocks {
			for p := b.Start; p < b.Start+b.Size; p++ {
				if !f.lports[p] {
					f.lports[p] = true
					f.mu.Unlock()
					return p, nil
				}
			}
		}
		f.mu.Unlock()
		// The store call is made without the lock: every connect on
		// this host reads containers under it, and a slow store must not
		// stall them. Two listeners claiming at once may claim a block
		// each; both get used.
		b, err := f.d.store.ClaimPortBlock(ctx, f.d.self.Name, store.ListenerOwner, f.d.cfg.Blocks())
		if err != nil {
			return 0, err
		}
		f.mu.Lock()
		f.lblocks = append(f.lblocks, b)
		f.mu.Unlock()
	}
}

// ReleaseListenerPort implements broker.Ports.
func (f *fastPath) ReleaseListenerPort(p uint16) {
	f.mu.Lock()
	delete(f.lports, p)
	f.mu.Unlock()
}

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

// restore loads what a previous slimd left: listener blocks and the ports
// of listeners still published for this host (their host sockets live on
// in the containers).
func (f *fastPath) restore(ctx context.Context) error {
	blocks, err := f.d.store.PortBlocks(ctx, f.d.self.Name)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for start, owner := range blocks {
		if owner == store.ListenerOwner {
			f.lblocks = append(f.lblocks, api.PortBlock{Start: start, Size: f.d.cfg.PortBlockSize})
		}
	}
	slices.SortFunc(f.lblocks, func(a, b api.PortBlock) int { return int(a.Start) - int(b.Start) })
	ls, _ := f.d.listeners.Snapshot()
	for _, l := range ls {
		if l.Host == f.d.self.Name {
			f.lports[l.HostPort] = true
		}
	}
	return nil
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

// reservePorts adds [first, last] to net.ipv4.ip_local_reserved_ports (which
// also covers IPv6), keeping what is there: the kernel then never gives
// these ports to anyone else as ephemeral ports, while explicit binds (ours)
// still work.
func reservePorts(first, last uint16) error {
	const path = "/proc/sys/net/ipv4/ip_local_reserved_ports"
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	cur := strings.TrimSpace(string(b))
	want := fmt.Sprintf("%d-%d", first, last)
	for _, r := range strings.Split(cur, ",") {
		if r == want {
			return nil
		}
	}
	v := want
	if cur != "" {
		v = cur + "," + want
	}
	if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
		return fmt.Errorf("reserve ports %s: %w", want, err)
	}
	return nil
}

// ParsePortRange parses "first-last" (the --port-range flag).
func ParsePortRange(s string) (uint16, uint16, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, errors.New("want first-last")
	}
	f, err1 := strconv.ParseUint(a, 10, 16)
	l, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil || f == 0 || f > l {
		return 0, 0, fmt.Errorf("%q: want first-last with 0 < first <= last < 65536", s)
	}
	return uint16(f), uint16(l), nil
}

// ownCgroup returns the cgroup the BPF programs attach to: slimd's own,
// which must hold nothing else. If slimd runs in the root cgroup (no
// service manager put it anywhere), it makes <cgroup2>/slim/<node> and
// moves itself there, before any host socket exists: sockets belong to
// the cgroup of the process that created them.
func (d *Daemon) ownCgroup() (string, error) {
	self, err := cgroupfs.Self()
	if err != nil {
		return "", err
	}
	root, err := cgroupfs.Mount()
	if err != nil {
		return "", err
	}
	if filepath.Clean(self) != filepath.Clean(root) {
		return self, nil
	}
	dir := filepath.Join(root, "slim", d.cfg.NodeName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("make slimd cgroup: %w", err)
	}
	if err := cgroupfs.Join(dir); err != nil {
		return "", err
	}
	return dir, nil
}

// syncBPF keeps the BPF address maps equal to the store: every endpoint's
// port blocks (keyed by its host's underlay IP) and every listener.
func (f *fastPath) syncBPF() error {
	p := f.d.bpf
	if p == nil {
		return nil
	}
	hosts, _ := f.d.hosts.Snapshot()
	eps, _ := f.d.endpoints.Snapshot()
	ls, _ := f.d.listeners.Snapshot()
	type bk struct {
		ip    netip.Addr
		start uint16
	}
	hostOf := func(name string) (api.Host, bool) { h, ok := hosts[name]; return h, ok }
	wantB := map[bk]netip.Addr{}
	for _, ep := range eps {
		h, ok := hosts[ep.Host]
		if !ok || !f.d.valid.endpoint(ep, hostOf) {
			continue
		}
		for _, b := range ep.PortBlocks {
			vip := ep.IPv4
			if b.IPv6 {
				vip = ep.IPv6
			}
			if vip.IsValid() {
				wantB[bk{h.UnderlayIP, b.Start}] = vip
			}
		}
	}
	// A host listener serves a container's IPv4 and IPv6 addresses: one
	// entry in each family's map.
	type lk struct {
		bk
		v6 bool
	}
	wantL := map[lk]netip.AddrPort{}
	for _, l := range ls {
		if f.d.valid.listener(l, f) {
			wantL[lk{bk{l.HostIP, l.HostPort}, bpf.IsIPv6(l.VIP)}] = netip.AddrPortFrom(l.VIP, l.Port)
		}
	}
	var errs []error
	haveB, err := p.PortBlocks()
	if err != nil {
		return err
	}
	for _, b := range haveB {
		k := bk{b.HostIP, b.Start}
		if v, ok := wantB[k]; ok && v == b.VIP {
			delete(wantB, k)
			continue
		}
		if _, ok := wantB[k]; !ok {
			errs = append(errs, p.DeletePortBlock(b.HostIP, b.Start))
		}
	}
	for k, v := range wantB {
		errs = append(errs, p.PutPortBlock(k.ip, k.start, v))
	}
	haveL, err := p.Listeners()
	if err != nil {
		return err
	}
	for _, l := range haveL {
		k := lk{bk{l.HostIP, l.HostPort}, l.InMap6}
		if v, ok := wantL[k]; ok && v == l.VIP {
			delete(wantL, k)
			continue
		}
		if _, ok := wantL[k]; !ok {
			errs = append(errs, p.DeleteListener(l.HostIP, l.HostPort, k.v6))
		}
	}
	for k, v := range wantL {
		errs = append(errs, p.PutListener(k.ip, k.start, v))
	}
	return errors.Join(errs...)
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

// restoreListeners takes over the listeners a predecessor left: those the
// store still lists for this host, and those only the pinned BPF map
// remembers (their records expired with an old lease) whose host socket is
// still listening; the latter are published again.
func (f *fastPath) restoreListeners(ctx context.Context) error {
	defer func() {
		f.restored.Store(true)
		f.markNAT()
	}()
	ls, _ := f.d.listeners.Snapshot()
	have := map[netip.AddrPort]bool{}
	for _, l := range ls {
		if l.Host == f.d.self.Name {
			f.d.broker.RestoreListener(l)
			have[netip.AddrPortFrom(l.VIP, l.Port)] = true
		}
	}
	if len(f.owned) == 0 {
		return nil
	}
	open, err := broker.OpenListenPorts()
	if err != nil {
		return err
	}
	byVIP := map[netip.Addr]api.Endpoint{}
	eps, _ := f.d.endpoints.Snapshot()
	for _, ep := range eps {
		if ep.Host == f.d.self.Name {
			byVIP[ep.IPv4] = ep
			if ep.IPv6.IsValid() {
				byVIP[ep.IPv6] = ep
			}
		}
	}
	for _, o := range f.owned {
		ep, ok := byVIP[o.VIP.Addr()]
		if have[o.VIP] || !open[o.HostPort] || !ok {
			continue
		}
		l := api.Listener{VIP: o.VIP.Addr(), Port: o.VIP.Port(), Host: f.d.self.Name, HostIP: o.HostIP, HostPort: o.HostPort,
			ContainerID: ep.ContainerID, IfName: ep.IfName}
		if _, err := f.d.store.PutListener(ctx, l, f.d.lease.ID()); err != nil {
			return err
		}
		f.d.broker.RestoreListener(l)
		f.mu.Lock()
		f.lports[o.HostPort] = true
		f.mu.Unlock()
		f.d.log.Info("listener re-published after its record expired", "vip", o.VIP, "hostPort", o.HostPort)
	}
	return nil
}
