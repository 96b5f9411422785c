package daemon

import (
	"net/netip"
	"testing"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/policy"
)

// TestRevoked: which live connections a policy change cuts, given what
// the policies now allow (here: nothing to 10.0.0.9, from anyone).
func TestRevoked(t *testing.T) {
	ap := netip.MustParseAddrPort
	denied := netip.MustParseAddr("10.0.0.9")
	allow := func(src netip.Addr, dst netip.AddrPort, proto policy.Protocol) bool {
		if proto != policy.ProtocolTCP {
			t.Errorf("asked about %s", proto)
		}
		return dst.Addr() != denied
	}
	conns := []fpConn{
		{c: api.Connection{Role: "client", VirtualLocal: ap("10.0.0.1:20481"), VirtualRemote: ap("10.0.0.9:80")}, ref: "client to denied"},
		{c: api.Connection{Role: "client", VirtualLocal: ap("10.0.0.1:20482"), VirtualRemote: ap("10.0.0.8:80")}, ref: "client to allowed"},
		// A server's connection is judged as the client's connect to it.
		{c: api.Connection{Role: "server", VirtualLocal: ap("10.0.0.9:80"), VirtualRemote: ap("10.0.0.1:20481")}, ref: "server denied"},
		{c: api.Connection{Role: "server", VirtualLocal: ap("10.0.0.8:80"), VirtualRemote: ap("10.0.0.9:20481")}, ref: "server allowed"},
		{c: api.Connection{Role: "client", VirtualLocal: ap("10.0.0.1:20483")}, ref: "no virtual peer"},
		{c: api.Connection{Role: "client", VirtualLocal: ap("10.0.0.1:20484"), VirtualRemote: ap("10.0.0.9:80"), State: "TIME_WAIT"}, ref: "closed already"},
	}
	var got []any
	for _, c := range revokedFastPath(conns, allow) {
		got = append(got, c.ref)
	}
	if len(got) != 2 || got[0] != "client to denied" || got[1] != "server denied" {
		t.Errorf("fast path: cut %v", got)
	}

	socks := []sockTuple{
		{local: ap("10.0.0.1:40000"), remote: ap("10.0.0.9:80"), ref: "client to denied"},
		{local: ap("[::ffff:10.0.0.1]:40001"), remote: ap("[::ffff:10.0.0.9]:80"), ref: "v4-mapped client to denied"},
		{local: ap("10.0.0.1:40002"), remote: ap("10.0.0.8:80"), ref: "client to allowed"},
		// On a listening port: the server end, judged by the connect to it.
		{local: ap("10.0.0.9:80"), remote: ap("10.0.0.1:40003"), ref: "server denied"},
		{local: ap("127.0.0.1:40004"), remote: ap("127.0.0.1:80"), ref: "loopback"},
	}
	got = nil
	for _, s := range revokedSockets(socks, map[uint16]bool{80: true}, allow) {
		got = append(got, s.ref)
	}
	if len(got) != 3 || got[0] != "client to denied" || got[1] != "v4-mapped client to denied" || got[2] != "server denied" {
		t.Errorf("container sockets: cut %v", got)
	}
}
