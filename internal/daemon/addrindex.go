package daemon

import (
	"errors"
	"net/netip"
	"slices"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/store"
)

// addrIndex is what the BPF address maps should hold, kept by applying
// each change of the caches to it: computing it from the whole store took
// 0.2 s at 200,000 endpoints, for every change (docs/scale.md). It notes
// the entries a change touched, so a pass writes only those.
type addrIndex struct {
	v      *view
	hostCh *store.Changes[api.Host]
	epCh   *store.Changes[api.Endpoint]
	lsCh   *store.Changes[api.Listener]

	want bpfState
	// epsOn and lsOn are the keys of the endpoints and listeners by the
	// host their records name: a change of that host's record (its
	// address, its lease, its leaving) re-evaluates them.
	epsOn, lsOn hostKeys
	// ipOf is each other host's underlay address as of the host changes
	// drained so far: entries are keyed by it, and a later pass must find
	// them under the same address. (The live cache may be ahead of the
	// drained changes: an endpoint removed while its host went would
	// leave its blocks behind.)
	ipOf map[string]netip.Addr
	// dirtyB and dirtyL are the entries changed since the last take.
	dirtyB map[blockKey]struct{}
	dirtyL map[mapListenerKey]struct{}
}

// indexDelta says what an update changed.
type indexDelta struct {
	// rebuilt: a cache listed everything again, the index was computed
	// from scratch and nothing is known of what changed.
	rebuilt          bool
	hosts, endpoints bool
	// local: a listener of this host, or this host's record, changed
	// (the DNAT and host-port filters hold only this host's listeners).
	local bool
}

func newAddrIndex(v *view) *addrIndex {
	return &addrIndex{v: v, hostCh: v.hosts.Track(), epCh: v.endpoints.Track(), lsCh: v.listeners.Track(),
		want:  bpfState{blocks: map[blockKey]mapAddr{}, listeners: map[mapListenerKey]netip.AddrPort{}},
		epsOn: hostKeys{}, lsOn: hostKeys{}, ipOf: map[string]netip.Addr{},
		dirtyB: map[blockKey]struct{}{}, dirtyL: map[mapListenerKey]struct{}{}}
}

type was[T any] struct {
	old, cur T
	had, ok  bool
}

// update applies the caches' changes since the last update; after a
// cache listed everything again it computes the index from scratch.
func (x *addrIndex) update() indexDelta {
	var d indexDelta
	relisted := func() { d.rebuilt = true }
	hc := map[string]was[api.Host]{}
	x.v.hosts.Drain(x.hostCh, relisted, func(k string, old api.Host, had bool, cur api.Host, ok bool) {
		hc[k] = was[api.Host]{old, cur, had, ok}
	})
	ec := map[string]was[api.Endpoint]{}
	x.v.endpoints.Drain(x.epCh, relisted, func(k string, old api.Endpoint, had bool, cur api.Endpoint, ok bool) {
		if !d.rebuilt {
			ec[k] = was[api.Endpoint]{old, cur, had, ok}
		}
	})
	lc := map[string]was[api.Listener]{}
	x.v.listeners.Drain(x.lsCh, relisted, func(k string, old api.Listener, had bool, cur api.Listener, ok bool) {
		if !d.rebuilt {
			lc[k] = was[api.Listener]{old, cur, had, ok}
		}
	})
	if d.rebuilt {
		x.rebuild()
		return indexDelta{rebuilt: true, hosts: true, endpoints: true, local: true}
	}
	d.hosts, d.endpoints = len(hc) > 0, len(ec) > 0
	self := x.v.self.Name
	_, d.local = hc[self]
	for _, w := range lc {
		if (w.had && w.old.Host == self) || (w.ok && w.cur.Host == self) {
			d.local = true
			break
		}
	}
	// A host's record changed: its endpoints and listeners are weighed
	// again (a listener's validity depends on its host's lease).
	for name := range hc {
		for _, k := range x.epsOn[name] {
			if _, ok := ec[k]; !ok {
				ep, ok := x.v.endpoints.Get(k)
				ec[k] = was[api.Endpoint]{ep, ep, ok, ok}
			}
		}
		for _, k := range x.lsOn[name] {
			if _, ok := lc[k]; !ok {
				l, ok := x.v.listeners.Get(k)
				lc[k] = was[api.Listener]{l, l, ok, ok}
			}
		}
	}
	// The blocks an endpoint held are keyed by its host's address then.
	hostIPWas := func(name string) (netip.Addr, bool) {
		if w, ok := hc[name]; ok && name != self {
			return w.old.UnderlayIP, w.had
		}
		return x.hostIP(name)
	}
	// Everything old goes first, then everything new: an entry that
	// moved from one record to another is removed and put back.
	for k, w := range ec {
		if w.had {
			if ip, ok := hostIPWas(w.old.Host); ok {
				x.removeEndpoint(w.old, ip)
			}
			x.epsOn.remove(w.old.Host, k)
		}
	}
	for k, w := range lc {
		if w.had {
			x.removeListener(w.old)
			x.lsOn.remove(w.old.Host, k)
		}
	}
	for name, w := range hc {
		if w.ok {
			x.ipOf[name] = w.cur.UnderlayIP
		} else {
			delete(x.ipOf, name)
		}
	}
	for k, w := range ec {
		if w.ok {
			x.epsOn.add(w.cur.Host, k)
			x.addEndpoint(&x.want, w.cur, true)
		}
	}
	for k, w := range lc {
		if w.ok {
			x.lsOn.add(w.cur.Host, k)
			x.addListener(&x.want, w.cur, true)
		}
	}
	return d
}

// rebuild computes the index from the whole caches.
func (x *addrIndex) rebuild() {
	want := bpfState{blocks: make(map[blockKey]mapAddr, len(x.want.blocks)), listeners: make(map[mapListenerKey]netip.AddrPort, len(x.want.listeners))}
	x.epsOn, x.lsOn, x.ipOf = hostKeys{}, hostKeys{}, map[string]netip.Addr{}
	x.v.hosts.Range(func(name string, h api.Host) bool {
		x.ipOf[name] = h.UnderlayIP
		return true
	})
	x.v.endpoints.Range(func(k string, ep api.Endpoint) bool {
		x.epsOn.add(ep.Host, k)
		x.addEndpoint(&want, ep, false)
		return true
	})
	// A listener's check reads its lease from the listener cache, which
	// Range holds: collect them first (a cache waiting to write would
	// deadlock a read of it inside its own Range).
	var ls []api.Listener
	x.v.listeners.Range(func(k string, l api.Listener) bool {
		x.lsOn.add(l.Host, k)
		ls = append(ls, l)
		return true
	})
	for _, l := range ls {
		x.addListener(&want, l, false)
	}
	x.want = want
	x.clean()
}

// addEndpoint puts a valid endpoint's port blocks on a known host into
// want.
func (x *addrIndex) addEndpoint(want *bpfState, ep api.Endpoint, note bool) {
	ip, ok := x.hostIP(ep.Host)
	if !ok || !x.v.validEndpoint(ep) {
		return
	}
	for _, b := range ep.PortBlocks {
		if vip := ep.BlockVIP(b); vip.IsValid() {
			k := newBlockKey(ip, b.Start)
			want.blocks[k] = mapAddrOf(vip)
			if note {
				x.dirtyB[k] = struct{}{}
			}
		}
	}
}

// hostIP is the address host's entries are keyed by (ipOf; this host's
// own is fixed).
func (x *addrIndex) hostIP(name string) (netip.Addr, bool) {
	if name == x.v.self.Name {
		return x.v.self.UnderlayIP, true
	}
	ip, ok := x.ipOf[name]
	return ip, ok
}

// removeEndpoint takes out the blocks an endpoint put in, when its host
// had address hostIP. An entry another record has since taken over (the
// value differs) stays.
func (x *addrIndex) removeEndpoint(ep api.Endpoint, hostIP netip.Addr) {
	for _, b := range ep.PortBlocks {
		k := newBlockKey(hostIP, b.Start)
		if v, ok := x.want.blocks[k]; ok && v == mapAddrOf(ep.BlockVIP(b)) {
			delete(x.want.blocks, k)
			x.dirtyB[k] = struct{}{}
		}
	}
}

func listenerEntry(l api.Listener) (mapListenerKey, netip.AddrPort) {
	return mapListenerKey{netip.AddrPortFrom(l.HostIP, l.HostPort), bpf.IsIPv6(l.VIP)}, netip.AddrPortFrom(l.VIP, l.Port)
}

func (x *addrIndex) addListener(want *bpfState, l api.Listener, note bool) {
	if !x.v.validListener(l) {
		return
	}
	k, v := listenerEntry(l)
	want.listeners[k] = v
	if note {
		x.dirtyL[k] = struct{}{}
	}
}

func (x *addrIndex) removeListener(l api.Listener) {
	k, v := listenerEntry(l)
	if have, ok := x.want.listeners[k]; ok && have == v {
		delete(x.want.listeners, k)
		x.dirtyL[k] = struct{}{}
	}
}

// listenersOn are host's listeners as the cache holds them, valid or
// not, by key.
func (x *addrIndex) listenersOn(host string) map[string]api.Listener {
	out := make(map[string]api.Listener, len(x.lsOn[host]))
	for _, k := range x.lsOn[host] {
		if l, ok := x.v.listeners.Get(k); ok {
			out[k] = l
		}
	}
	return out
}

// flush writes the entries changed since the last flush to m, or with
// all, makes m hold exactly want (reading it back). After an error the
// next flush must be with all.
func (x *addrIndex) flush(m addrMaps, all bool) error {
	if all {
		x.clean()
		return x.want.apply(m)
	}
	errs := append(writeEntries(x.dirtyB, x.want.blocks, blockOps(m)), writeEntries(x.dirtyL, x.want.listeners, listenerOps(m))...)
	x.clean()
	return errors.Join(errs...)
}

// clean empties the dirty sets. A cleared map keeps its size, so a set a
// seed grew to 200,000 entries is replaced instead.
func (x *addrIndex) clean() {
	if len(x.dirtyB) > maxKeptDirty {
		x.dirtyB = map[blockKey]struct{}{}
	}
	if len(x.dirtyL) > maxKeptDirty {
		x.dirtyL = map[mapListenerKey]struct{}{}
	}
	clear(x.dirtyB)
	clear(x.dirtyL)
}

const maxKeptDirty = 1024

// hostKeys are record keys by the host their records name. A host has
// about a hundred, so a slice costs less than a set (a third less at
// 200,000 endpoints) and finding one is a short scan.
type hostKeys map[string][]string

func (m hostKeys) add(host, key string) {
	if !slices.Contains(m[host], key) {
		m[host] = append(m[host], key)
	}
}

func (m hostKeys) remove(host, key string) {
	ks := m[host]
	i := slices.Index(ks, key)
	if i < 0 {
		return
	}
	last := len(ks) - 1
	ks[i], ks[last] = ks[last], ""
	if last == 0 {
		delete(m, host)
	} else {
		m[host] = ks[:last]
	}
}
