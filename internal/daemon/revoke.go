package daemon

import (
	"net/netip"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/policy"
)

// allowFunc says whether network policy allows a connection from src to
// dst now.
type allowFunc func(src netip.Addr, dst netip.AddrPort, proto policy.Protocol) bool

// allowNow is the policies in force, as an allowFunc.
func (p *policies) allowNow() allowFunc {
	s := p.state.Load()
	return func(src netip.Addr, dst netip.AddrPort, proto policy.Protocol) bool {
		return s.set.Decide(s.peer(src), s.peer(dst.Addr()), dst.Port(), proto).Allowed
	}
}

// revokedFastPath are the fast-path connections (this host's host
// sockets, by their virtual 4-tuples) that the policies now deny: a
// client's by its own address and the listener it reached, a server's by
// the client it accepted.
func revokedFastPath(conns []fpConn, allow allowFunc) []fpConn {
	var out []fpConn
	for _, fc := range conns {
		c := fc.c
		if !c.VirtualRemote.IsValid() || !c.VirtualLocal.IsValid() || c.State == "TIME_WAIT" {
			continue // nothing to cut: no virtual peer, or closed already
		}
		src, dst := c.VirtualLocal.Addr(), c.VirtualRemote
		if c.Role == "server" {
			src, dst = c.VirtualRemote.Addr(), c.VirtualLocal
		}
		if !allow(src, dst, policy.ProtocolTCP) {
			out = append(out, fc)
		}
	}
	return out
}

// fpConn is a fast-path connection; ref is what destroys its socket.
type fpConn struct {
	c   api.Connection
	ref any
}

// sockTuple is one TCP socket of a container's namespace; ref is what
// destroys it.
type sockTuple struct {
	local, remote netip.AddrPort
	ref           any
}

// revokedSockets are the sockets of a container's namespace (its overlay
// connections) that the policies now deny. A socket on a port the
// container listens on is the server end; any other, the client end.
// Loopback stays inside the container, where policies do not look.
func revokedSockets(socks []sockTuple, listening map[uint16]bool, allow allowFunc) []sockTuple {
	var out []sockTuple
	for _, s := range socks {
		l, r := unmapAP(s.local), unmapAP(s.remote)
		if l.Addr().IsLoopback() || r.Addr().IsLoopback() || !r.Addr().IsValid() || r.Addr().IsUnspecified() {
			continue
		}
		ok := allow(l.Addr(), r, policy.ProtocolTCP)
		if listening[l.Port()] {
			ok = allow(r.Addr(), l, policy.ProtocolTCP)
		}
		if !ok {
			out = append(out, s)
		}
	}
	return out
}

func unmapAP(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
