package bpf

import "net/netip"

// IsIPv6 reports whether a is an IPv6 address proper (not v4-mapped):
// which family's listener map holds a virtual address.
func IsIPv6(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }

// AppSocket is what the recorders know of an application's TCP socket.
type AppSocket struct {
	Family, Protocol int
	NetnsCookie      uint64
	// Opts has OptBit(level, name) set for every option the application
	// set on the socket.
	Opts uint64
}

// OptBit is the bit of AppSocket.Opts that option (level, name) sets; the
// bits are shared, so a set bit means "perhaps set". It is optbit in
// slim.c.
func OptBit(level, name int) uint64 { return 1 << (uint32(name*7+level) & 63) }
