package overlay

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ErrNotSupported is returned by the kernel-facing functions on systems other
// than Linux.
var ErrNotSupported = errors.New("overlay: not supported on this system")

// ErrInvalidPeer is returned (wrapped) for a Peer that cannot be programmed.
var ErrInvalidPeer = errors.New("invalid peer")

// Peer is one remote host as the overlay programs it.
type Peer struct {
	Host       string           // informational (not stored in the kernel; Peers() leaves it empty)
	UnderlayIP netip.Addr       // remote VTEP underlay IPv4 address
	VTEPMAC    net.HardwareAddr // remote vxlan device MAC
	Subnet4    netip.Prefix     // remote pod subnet, e.g. 10.244.2.0/24; gateway = Subnet4.Addr() (the .0)
	Subnet6    netip.Prefix     // optional, e.g. fd5a:11:0:2::/64; gateway = Subnet6.Addr()
}

// Validate reports whether p can be programmed: an IPv4 underlay address, a
// 6-byte unicast MAC, an IPv4 subnet with room for its gateway and pods
// (shorter than /32), and, if set, an IPv6 subnet shorter than /128. Host
// routes are refused because Peers reports leftover neighbour entries as
// host-route peers (see Dataplane.Peers).
func (p Peer) Validate() error {
	var errs []error
	if !p.UnderlayIP.Is4() {
		errs = append(errs, fmt.Errorf("underlay address %v is not IPv4", p.UnderlayIP))
	}
	if len(p.VTEPMAC) != 6 || p.VTEPMAC[0]&1 != 0 {
		errs = append(errs, fmt.Errorf("VTEP MAC %q is not a unicast Ethernet address", p.VTEPMAC.String()))
	}
	if !p.Subnet4.IsValid() || !p.Subnet4.Addr().Is4() || p.Subnet4.Bits() >= 32 {
		errs = append(errs, fmt.Errorf("subnet %v is not an IPv4 prefix shorter than /32", p.Subnet4))
	}
	if p.Subnet6.IsValid() && (!p.Subnet6.Addr().Is6() || p.Subnet6.Addr().Is4In6() || p.Subnet6.Bits() >= 128) {
		errs = append(errs, fmt.Errorf("subnet %v is not an IPv6 prefix shorter than /128", p.Subnet6))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w %s: %w", ErrInvalidPeer, p.label(), errors.Join(errs...))
	}
	return nil
}

// normalize returns p with masked prefixes and unmapped addresses, the form
// the kernel reports.
func (p Peer) normalize() Peer {
	p.UnderlayIP = p.UnderlayIP.Unmap()
	if p.Subnet4.IsValid() {
		p.Subnet4 = netip.PrefixFrom(p.Subnet4.Addr().Unmap(), p.Subnet4.Bits()).Masked()
	}
	if p.Subnet6.IsValid() {
		p.Subnet6 = p.Subnet6.Masked()
	}
	if len(p.VTEPMAC) == 0 {
		p.VTEPMAC = nil
	}
	return p
}

// gw4 is the IPv4 gateway (and neighbour entry) of p, invalid if p has no
// IPv4 subnet.
func (p Peer) gw4() netip.Addr {
	if !p.Subnet4.IsValid() {
		return netip.Addr{}
	}
	return p.Subnet4.Masked().Addr()
}

// gw6 is the IPv6 gateway of p, invalid if p has no IPv6 subnet.
func (p Peer) gw6() netip.Addr {
	if !p.Subnet6.IsValid() {
		return netip.Addr{}
	}
	return p.Subnet6.Masked().Addr()
}

// sameKernelState reports whether a and b program the same kernel objects
// (Host is not stored in the kernel and is ignored).
func sameKernelState(a, b Peer) bool {
	a, b = a.normalize(), b.normalize()
	return a.UnderlayIP == b.UnderlayIP &&
		bytes.Equal(a.VTEPMAC, b.VTEPMAC) &&
		a.Subnet4 == b.Subnet4 &&
		a.Subnet6 == b.Subnet6
}

// peerKey identifies a peer in Diff: its IPv4 subnet. Leftovers that
// Peers reports without one are keyed by their IPv6 subnet or, failing that,
// by their MAC (see assemble).
type peerKey struct {
	kind   int // 0: Subnet4, 1: Subnet6, 2: MAC only
	prefix netip.Prefix
	mac    string
}

func keyOf(p Peer) peerKey {
	p = p.normalize()
	switch {
	case p.Subnet4.IsValid():
		return peerKey{kind: 0, prefix: p.Subnet4}
	case p.Subnet6.IsValid():
		return peerKey{kind: 1, prefix: p.Subnet6}
	default:
		return peerKey{kind: 2, mac: string(p.VTEPMAC)}
	}
}

func compareKeys(a, b peerKey) int {
	if c := cmp.Compare(a.kind, b.kind); c != 0 {
		return c
	}
	if c := a.prefix.Addr().Compare(b.prefix.Addr()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.prefix.Bits(), b.prefix.Bits()); c != 0 {
		return c
	}
	return strings.Compare(a.mac, b.mac)
}

// comparePeers orders peers by key, for deterministic output.
func comparePeers(a, b Peer) int { return compareKeys(keyOf(a), keyOf(b)) }

// label names p in errors and logs: its host if known, else its subnet.
func (p Peer) label() string {
	if p.Host != "" {
		return p.Host
	}
	return p.String()
}

// String formats p on one line, as the kernel sees it (Host only when set).
func (p Peer) String() string {
	var b strings.Builder
	if p.Host != "" {
		fmt.Fprintf(&b, "host=%s ", p.Host)
	}
	fmt.Fprintf(&b, "subnet4=%s subnet6=%s underlay=%s mac=%s",
		orDash(p.Subnet4), orDash(p.Subnet6), orDash(p.UnderlayIP), macOrDash(p.VTEPMAC))
	return b.String()
}

type validity interface {
	IsValid() bool
	String() string
}

func orDash(v validity) string {
	if !v.IsValid() {
		return "-"
	}
	return v.String()
}

func macOrDash(m net.HardwareAddr) string {
	if len(m) == 0 {
		return "-"
	}
	return m.String()
}
