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
	// Connected: the kernel ran a connect on the socket in the container
	// (it may be connected, or connecting, over the overlay).
	Connected bool
	// Listened: slimd left a listen() on it to the kernel.
	Listened bool
}

// OptBit is the bit of AppSocket.Opts that option (level, name) sets; the
// bits are shared, so a set bit means "perhaps set". It is optbit in
// slim.c.
func OptBit(level, name int) uint64 { return 1 << (uint32(name*7+level) & 63) }

// MaxBlocks is the most port blocks one connect permit names.
const MaxBlocks = 4

// Conn is a client host socket's connect permit (see Programs.ArmConn).
type Conn struct {
	Local   netip.Addr     // getsockname's address; the port is the one bound
	Peer    netip.AddrPort // getpeername's address
	Want    netip.AddrPort // the destination the application's connect must name
	Dst     netip.AddrPort // the host listener it goes to (IPv4)
	Src     netip.Addr     // the host address bound (IPv4)
	Blocks  [MaxBlocks]uint16
	NBlocks int
}

// ConnState is where a client host socket is in its life (struct conn's
// state in slim.c).
type ConnState uint16

// Permit states.
const (
	ConnNone  ConnState = 0 // no permit: a listener, or a socket from before permits
	ConnArmed ConnState = 1 // installed; the application's connect has not run
	ConnUsed  ConnState = 2 // the one connect ran
)

const connArmed = uint16(ConnArmed)
