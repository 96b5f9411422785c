package daemon

import (
	"errors"
	"net/netip"

	"github.com/slimnet/slim/internal/bpf"
)

// addrMaps is what the reconciler needs of the BPF programs: the address
// maps that turn host addresses back into virtual ones.
type addrMaps interface {
	PortBlocks() ([]bpf.PortBlock, error)
	PutPortBlock(hostIP netip.Addr, start uint16, vip netip.Addr) error
	DeletePortBlock(hostIP netip.Addr, start uint16) error
	Listeners() ([]bpf.Listener, error)
	PutListener(hostIP netip.Addr, hostPort uint16, vip netip.AddrPort) error
	DeleteListener(hostIP netip.Addr, hostPort uint16, ipv6 bool) error
}

// blockKey is a port block as the maps key it: the underlay IP of the
// endpoint's host and the block's first port.
type blockKey struct {
	ip    mapAddr
	start uint16
}

func newBlockKey(ip netip.Addr, start uint16) blockKey { return blockKey{mapAddrOf(ip), start} }

func (k blockKey) String() string { return netip.AddrPortFrom(k.ip.addr(), k.start).String() }

// mapAddr is an address as the port block index keeps it. A netip.Addr
// holds a pointer (its zone), so a map of 200,000 of them is scanned by
// every garbage collection; a mapAddr holds none, and no zone (block
// keys and virtual addresses have none).
type mapAddr struct {
	b   [16]byte
	fam uint8 // 4, 6, or 0 for the invalid address
}

func mapAddrOf(a netip.Addr) mapAddr {
	switch {
	case a.Is4():
		return mapAddr{a.As16(), 4}
	case a.Is6():
		return mapAddr{a.As16(), 6}
	}
	return mapAddr{}
}

func (a mapAddr) addr() netip.Addr {
	switch a.fam {
	case 4:
		return netip.AddrFrom16(a.b).Unmap()
	case 6:
		return netip.AddrFrom16(a.b)
	}
	return netip.Addr{}
}

func (a mapAddr) String() string { return a.addr().String() }

// mapListenerKey is a listener as the maps key it: a host listener serves a
// container's IPv4 and IPv6 addresses, one entry in each family's map.
type mapListenerKey struct {
	host netip.AddrPort
	v6   bool
}

// bpfState is what the address maps hold.
type bpfState struct {
	blocks    map[blockKey]mapAddr
	listeners map[mapListenerKey]netip.AddrPort
}

// entryOps writes and deletes one kind of map entry.
type entryOps[K comparable, V comparable] struct {
	put func(K, V) error
	del func(K) error
}

func blockOps(m addrMaps) entryOps[blockKey, mapAddr] {
	return entryOps[blockKey, mapAddr]{
		put: func(k blockKey, v mapAddr) error { return m.PutPortBlock(k.ip.addr(), k.start, v.addr()) },
		del: func(k blockKey) error { return m.DeletePortBlock(k.ip.addr(), k.start) },
	}
}

func listenerOps(m addrMaps) entryOps[mapListenerKey, netip.AddrPort] {
	return entryOps[mapListenerKey, netip.AddrPort]{
		put: func(k mapListenerKey, v netip.AddrPort) error { return m.PutListener(k.host.Addr(), k.host.Port(), v) },
		del: func(k mapListenerKey) error { return m.DeleteListener(k.host.Addr(), k.host.Port(), k.v6) },
	}
}

// apply makes m hold exactly want, touching only entries that differ (the
// maps are read by every connect). It goes on past failed entries and
// returns them all. In the usual case, where the maps already hold
// everything, it allocates nothing beyond the read-back: at 200,000
// blocks it runs every resync interval.
func (want bpfState) apply(m addrMaps) error {
	haveB, err := m.PortBlocks()
	if err != nil {
		return err
	}
	errs := applyEntries(haveB, func(b bpf.PortBlock) (blockKey, mapAddr) { return newBlockKey(b.HostIP, b.Start), mapAddrOf(b.VIP) },
		want.blocks, blockOps(m))
	haveL, err := m.Listeners()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	errs = append(errs, applyEntries(haveL, func(l bpf.Listener) (mapListenerKey, netip.AddrPort) {
		return mapListenerKey{netip.AddrPortFrom(l.HostIP, l.HostPort), l.InMap6}, l.VIP
	}, want.listeners, listenerOps(m))...)
	return errors.Join(errs...)
}

// applyEntries makes a map that holds have (read back, each entry's key
// and value given by entry) hold exactly want.
func applyEntries[E any, K, V comparable](have []E, entry func(E) (K, V), want map[K]V, o entryOps[K, V]) []error {
	var errs []error
	in := 0 // wanted entries the map holds (after the puts below)
	for _, e := range have {
		k, v := entry(e)
		w, ok := want[k]
		switch {
		case !ok:
			errs = append(errs, o.del(k))
			continue
		case w != v:
			errs = append(errs, o.put(k, w))
		}
		in++
	}
	if in < len(want) {
		held := make(map[K]bool, len(have))
		for _, e := range have {
			k, _ := entry(e)
			held[k] = true
		}
		for k, v := range want {
			if !held[k] {
				errs = append(errs, o.put(k, v))
			}
		}
	}
	return errs
}

// writeEntries writes the dirty keys to a map: want's value, or a delete
// for a key want no longer has.
func writeEntries[K, V comparable](dirty map[K]struct{}, want map[K]V, o entryOps[K, V]) []error {
	var errs []error
	for k := range dirty {
		if v, ok := want[k]; ok {
			errs = append(errs, o.put(k, v))
		} else {
			errs = append(errs, o.del(k))
		}
	}
	return errs
}
