// Package ipam does the address arithmetic of Slim: it cuts the cluster
// CIDRs into per-host slots and picks container addresses inside a host's
// subnet. It is pure logic; the store makes the choices durable.
//
// A slot number names one IPv4 host subnet and, when IPv6 is on, the IPv6
// host subnet with the same number, so a host holds one claim for both.
// Inside a host subnet, the first address (the ".0") is the gateway that
// sits on the host's vxlan device, and the last IPv4 address is skipped
// because some software still treats it as broadcast. A container's IPv6
// address has the same offset in the IPv6 subnet as its IPv4 address has
// in the IPv4 subnet, so one allocation serves both families.
package ipam

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
)

// ErrExhausted means no address or slot is free.
var ErrExhausted = errors.New("exhausted")

// Plan is the cluster address plan.
type Plan struct {
	Cluster4  netip.Prefix
	HostBits4 int // prefix length of a host's IPv4 subnet
	Cluster6  netip.Prefix
	HostBits6 int // prefix length of a host's IPv6 subnet; ignored if Cluster6 is invalid
}

// maxSlots bounds the number of host slots considered; 65536 hosts is far
// beyond any cluster we target and keeps scans cheap.
const maxSlots = 1 << 16

// Validate checks the plan.
func (p Plan) Validate() error {
	if !p.Cluster4.IsValid() || !p.Cluster4.Addr().Is4() {
		return fmt.Errorf("cluster CIDR %v: want an IPv4 prefix", p.Cluster4)
	}
	if p.Cluster4 != p.Cluster4.Masked() {
		return fmt.Errorf("cluster CIDR %v has host bits set", p.Cluster4)
	}
	if p.HostBits4 < p.Cluster4.Bits() || p.HostBits4 > 30 {
		return fmt.Errorf("host prefix length /%d: want between /%d and /30", p.HostBits4, p.Cluster4.Bits())
	}
	if p.Cluster6.IsValid() {
		if !p.Cluster6.Addr().Is6() || p.Cluster6.Addr().Is4In6() {
			return fmt.Errorf("cluster CIDR %v: want an IPv6 prefix", p.Cluster6)
		}
		if p.Cluster6 != p.Cluster6.Masked() {
			return fmt.Errorf("cluster CIDR %v has host bits set", p.Cluster6)
		}
		if p.HostBits6 < p.Cluster6.Bits() || p.HostBits6 > 120 {
			return fmt.Errorf("host prefix length /%d: want between /%d and /120", p.HostBits6, p.Cluster6.Bits())
		}
		// Offsets are shared between families, so the v6 subnet must hold
		// every v4 offset.
		if 128-p.HostBits6 < 32-p.HostBits4 {
			return fmt.Errorf("IPv6 host subnet /%d is smaller than IPv4 host subnet /%d", p.HostBits6, p.HostBits4)
		}
	}
	return nil
}

// Slots is how many host subnets the plan has.
func (p Plan) Slots() int {
	n := slotsIn(p.Cluster4, p.HostBits4)
	if p.Cluster6.IsValid() {
		n = min(n, slotsIn(p.Cluster6, p.HostBits6))
	}
	return n
}

func slotsIn(c netip.Prefix, hostBits int) int {
	d := hostBits - c.Bits()
	if d >= 16 {
		return maxSlots
	}
	return 1 << d
}

// Slot returns the host subnets of slot i.
func (p Plan) Slot(i int) (v4, v6 netip.Prefix, err error) {
	if i < 0 || i >= p.Slots() {
		return v4, v6, fmt.Errorf("slot %d out of range [0,%d)", i, p.Slots())
	}
	v4 = netip.PrefixFrom(addOffset(p.Cluster4.Addr(), big.NewInt(0).Lsh(big.NewInt(int64(i)), uint(32-p.HostBits4))), p.HostBits4)
	if p.Cluster6.IsValid() {
		v6 = netip.PrefixFrom(addOffset(p.Cluster6.Addr(), big.NewInt(0).Lsh(big.NewInt(int64(i)), uint(128-p.HostBits6))), p.HostBits6)
	}
	return v4, v6, nil
}

// SlotOf returns the slot number of an IPv4 host subnet, or -1.
func (p Plan) SlotOf(v4 netip.Prefix) int {
	if v4.Bits() != p.HostBits4 || !p.Cluster4.Contains(v4.Addr()) || v4.Masked() != v4 {
		return -1
	}
	off := offset(p.Cluster4.Addr(), v4.Addr())
	i := int(off.Rsh(off, uint(32-p.HostBits4)).Int64())
	if i >= p.Slots() {
		return -1
	}
	return i
}

// FreeSlot returns the lowest slot not in used.
func (p Plan) FreeSlot(used map[int]bool) (int, error) {
	for i := range p.Slots() {
		if !used[i] {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no free host subnet in %v: %w", p.Cluster4, ErrExhausted)
}

// Gateway is the address of a host subnet that sits on the vxlan device.
func Gateway(subnet netip.Prefix) netip.Addr { return subnet.Masked().Addr() }

// NextFree picks a container address in subnet that is not in used,
// starting after last (round robin, so a released address is not reused at
// once and stale peers' caches have time to forget it).
func NextFree(subnet netip.Prefix, used map[netip.Addr]bool, last netip.Addr) (netip.Addr, error) {
	if !subnet.Addr().Is4() {
		return netip.Addr{}, fmt.Errorf("subnet %v: want IPv4", subnet)
	}
	subnet = subnet.Masked()
	size := 1 << (32 - subnet.Bits())
	first := subnet.Addr()
	start := 0
	if subnet.Contains(last) {
		start = int(offset(first, last).Int64()) + 1
	}
	for k := range size {
		off := (start + k) % size
		if off == 0 || off == size-1 { // gateway, broadcast
			continue
		}
		a := addOffset(first, big.NewInt(int64(off)))
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address in %v: %w", subnet, ErrExhausted)
}

// Pair returns the IPv6 address with the same offset in subnet6 as v4 has
// in subnet4; zero if subnet6 is not set.
func Pair(v4 netip.Addr, subnet4, subnet6 netip.Prefix) netip.Addr {
	if !subnet6.IsValid() || !subnet4.Contains(v4) {
		return netip.Addr{}
	}
	return addOffset(subnet6.Masked().Addr(), offset(subnet4.Masked().Addr(), v4))
}

func offset(base, a netip.Addr) *big.Int {
	return new(big.Int).Sub(new(big.Int).SetBytes(a.AsSlice()), new(big.Int).SetBytes(base.AsSlice()))
}

func addOffset(base netip.Addr, off *big.Int) netip.Addr {
	n := new(big.Int).Add(new(big.Int).SetBytes(base.AsSlice()), off)
	b := make([]byte, len(base.AsSlice()))
	n.FillBytes(b)
	a, _ := netip.AddrFromSlice(b)
	return a
}
