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

// apply makes m hold exactly want, touching only entries that differ (the
// maps are read by every connect). It goes on past failed entries and
// returns them all. In the usual case, where the maps already hold
// everything, it allocates nothing beyond the read-back: at 200,000
// blocks it runs every resync interval.
func (want bpfState) apply(m addrMaps) error {
	var errs []error
	haveB, err := m.PortBlocks()
	if err != nil {
		return err
	}
	in := 0 // wanted entries the map holds (after the puts below)
	for _, b := range haveB {
		v, ok := want.blocks[blockKey{b.HostIP, b.Start}]
		switch {
		case !ok:
			errs = append(errs, m.DeletePortBlock(b.HostIP, b.Start))
			continue
		case v != b.VIP:
			errs = append(errs, m.PutPortBlock(b.HostIP, b.Start, v))
		}
		in++
	}
	if in < len(want.blocks) {
		have := make(map[blockKey]bool, len(haveB))
		for _, b := range haveB {
			have[blockKey{b.HostIP, b.Start}] = true
		}
		for k, v := range want.blocks {
			if !have[k] {
				errs = append(errs, m.PutPortBlock(k.ip, k.start, v))
			}
		}
	}
	haveL, err := m.Listeners()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	in = 0
	for _, l := range haveL {
		v, ok := want.listeners[mapListenerKey{netip.AddrPortFrom(l.HostIP, l.HostPort), l.InMap6}]
		switch {
		case !ok:
			errs = append(errs, m.DeleteListener(l.HostIP, l.HostPort, l.InMap6))
			continue
		case v != l.VIP:
			errs = append(errs, m.PutListener(l.HostIP, l.HostPort, v))
		}
		in++
	}
	if in < len(want.listeners) {
		have := make(map[mapListenerKey]bool, len(haveL))
		for _, l := range haveL {
			have[mapListenerKey{netip.AddrPortFrom(l.HostIP, l.HostPort), l.InMap6}] = true
		}
		for k, v := range want.listeners {
			if !have[k] {
				errs = append(errs, m.PutListener(k.host.Addr(), k.host.Port(), v))
			}
		}
	}
	return errors.Join(errs...)
}
