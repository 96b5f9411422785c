package broker

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Socket address families as the kernel encodes them (sa_family_t).
const (
	afInet  = 2
	afInet6 = 10
	// sockaddrMax is the most we ever read from a process: a
	// sockaddr_in6 is 28 bytes; anything larger is not an inet address.
	sockaddrMax = 28
)

var errNotInet = errors.New("not an inet socket address")

// parseSockaddr decodes a raw sockaddr_in or sockaddr_in6 as a process
// passed it to connect(). IPv4-mapped IPv6 addresses come back as IPv4,
// since that is where such a connection goes. Anything else (AF_UNIX,
// AF_UNSPEC used to disconnect, short or malformed buffers) is errNotInet:
// such calls are not ours to handle.
func parseSockaddr(b []byte) (netip.AddrPort, error) {
	if len(b) < 2 {
		return netip.AddrPort{}, errNotInet
	}
	// sa_family is in host byte order; both supported arches are little
	// endian.
	switch binary.LittleEndian.Uint16(b) {
	case afInet:
		if len(b) < 16 {
			return netip.AddrPort{}, errNotInet
		}
		port := binary.BigEndian.Uint16(b[2:4])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
	case afInet6:
		if len(b) < 28 {
			return netip.AddrPort{}, errNotInet
		}
		port := binary.BigEndian.Uint16(b[2:4])
		a := netip.AddrFrom16([16]byte(b[8:24]))
		if scope := binary.LittleEndian.Uint32(b[24:28]); scope != 0 && a.IsLinkLocalUnicast() {
			// Link-local with a scope names an interface of the
			// container; never a virtual address.
			return netip.AddrPort{}, errNotInet
		}
		return netip.AddrPortFrom(a.Unmap(), port), nil
	}
	return netip.AddrPort{}, errNotInet
}
