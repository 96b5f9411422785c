package daemon

import (
	"errors"
	"net/netip"

	"github.com/slimnet/slim/internal/api"
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
	ip    netip.Addr
	start uint16
}

// mapListenerKey is a listener as the maps key it: a host listener serves a
// container's IPv4 and IPv6 addresses, one entry in each family's map.
type mapListenerKey struct {
	host netip.AddrPort
	v6   bool
}

// bpfState is what the address maps hold.
type bpfState struct {
	blocks    map[blockKey]netip.Addr
	listeners map[mapListenerKey]netip.AddrPort
}

// desiredBPF computes the maps' content from the store: every valid
// endpoint's port blocks on a known host, every valid listener.
func desiredBPF(hosts map[string]api.Host, eps map[string]api.Endpoint, ls map[string]api.Listener,
	validEndpoint func(api.Endpoint) bool, validListener func(api.Listener) bool) bpfState {
	want := bpfState{blocks: map[blockKey]netip.Addr{}, listeners: map[mapListenerKey]netip.AddrPort{}}
	for _, ep := range eps {
		h, ok := hosts[ep.Host]
		if !ok || !validEndpoint(ep) {
			continue
		}
		for _, b := range ep.PortBlocks {
			vip := ep.IPv4
			if b.IPv6 {
				vip = ep.IPv6
			}
			if vip.IsValid() {
				want.blocks[blockKey{h.UnderlayIP, b.Start}] = vip
			}
		}
	}
	for _, l := range ls {
		if validListener(l) {
			want.listeners[mapListenerKey{netip.AddrPortFrom(l.HostIP, l.HostPort), bpf.IsIPv6(l.VIP)}] = netip.AddrPortFrom(l.VIP, l.Port)
		}
	}
	return want
}

// apply makes m hold exactly want, touching only entries that differ (the
// maps are read by every connect). It goes on past failed entries and
// returns them all.
func (want bpfState) apply(m addrMaps) error {
	var errs []error
	haveB, err := m.PortBlocks()
	if err != nil {
		return err
	}
	putB := make(map[blockKey]netip.Addr, len(want.blocks))
	for k, v := range want.blocks {
		putB[k] = v
	}
	for _, b := range haveB {
		k := blockKey{b.HostIP, b.Start}
		v, ok := putB[k]
		switch {
		case !ok:
			errs = append(errs, m.DeletePortBlock(b.HostIP, b.Start))
		case v == b.VIP:
			delete(putB, k)
		}
	}
	for k, v := range putB {
		errs = append(errs, m.PutPortBlock(k.ip, k.start, v))
	}
	haveL, err := m.Listeners()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	putL := make(map[mapListenerKey]netip.AddrPort, len(want.listeners))
	for k, v := range want.listeners {
		putL[k] = v
	}
	for _, l := range haveL {
		k := mapListenerKey{netip.AddrPortFrom(l.HostIP, l.HostPort), l.InMap6}
		v, ok := putL[k]
		switch {
		case !ok:
			errs = append(errs, m.DeleteListener(l.HostIP, l.HostPort, l.InMap6))
		case v == l.VIP:
			delete(putL, k)
		}
	}
	for k, v := range putL {
		errs = append(errs, m.PutListener(k.host.Addr(), k.host.Port(), v))
	}
	return errors.Join(errs...)
}

// applyDiff makes m go from have (what an earlier apply left there) to
// want without reading the maps back: reading 200,000 port blocks back
// costs over a second of system calls (docs/scale.md), too much for every
// change of a large cluster. The periodic pass uses apply instead, which
// repairs whatever else changed the maps.
func (want bpfState) applyDiff(have bpfState, m addrMaps) error {
	var errs []error
	for k := range have.blocks {
		if _, ok := want.blocks[k]; !ok {
			errs = append(errs, m.DeletePortBlock(k.ip, k.start))
		}
	}
	for k, v := range want.blocks {
		if old, ok := have.blocks[k]; !ok || old != v {
			errs = append(errs, m.PutPortBlock(k.ip, k.start, v))
		}
	}
	for k := range have.listeners {
		if _, ok := want.listeners[k]; !ok {
			errs = append(errs, m.DeleteListener(k.host.Addr(), k.host.Port(), k.v6))
		}
	}
	for k, v := range want.listeners {
		if old, ok := have.listeners[k]; !ok || old != v {
			errs = append(errs, m.PutListener(k.host.Addr(), k.host.Port(), v))
		}
	}
	return errors.Join(errs...)
}
