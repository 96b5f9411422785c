package daemon

import (
	"maps"
	"net/netip"
	"testing"

	"github.com/slimnet/slim/internal/api"
)

func TestConnTable(t *testing.T) {
	hosts, eps, ls := syncFixture()
	ap := netip.MustParseAddrPort
	// h1 runs client a; h2 runs server b (listener on host port 30000).
	t1, t2 := newConnTable(h1IP, 256, ls), newConnTable(h2IP, 256, ls)
	t1.addBlocks(hosts, maps.All(eps), nil)
	t2.addBlocks(hosts, maps.All(eps), nil)
	for _, tc := range []struct {
		name          string
		t             *connTable
		local, remote netip.AddrPort
		want          api.Connection
		ok            bool
	}{
		{
			name: "client over IPv4", t: t1, local: ap("192.168.77.1:20490"), remote: ap("192.168.77.2:30000"), ok: true,
			want: api.Connection{Role: "client", Container: "a", VirtualLocal: ap("10.244.1.2:20490"), VirtualRemote: ap("10.244.2.2:80")},
		},
		{
			name: "client over IPv6 (its IPv6 block)", t: t1, local: ap("192.168.77.1:20740"), remote: ap("192.168.77.2:30000"), ok: true,
			want: api.Connection{Role: "client", Container: "a", VirtualLocal: ap("[fd00:0:0:1::2]:20740"), VirtualRemote: ap("[fd00:0:0:2::2]:80")},
		},
		{
			name: "server, fast-path client", t: t2, local: ap("192.168.77.2:30000"), remote: ap("192.168.77.1:20490"), ok: true,
			want: api.Connection{Role: "server", VirtualLocal: ap("10.244.2.2:80"), VirtualRemote: ap("10.244.1.2:20490")},
		},
		{
			name: "server, IPv6 fast-path client", t: t2, local: ap("192.168.77.2:30000"), remote: ap("192.168.77.1:20740"), ok: true,
			want: api.Connection{Role: "server", VirtualLocal: ap("[fd00:0:0:2::2]:80"), VirtualRemote: ap("[fd00:0:0:1::2]:20740")},
		},
		{
			name: "server, overlay client (DNAT) keeps its address", t: t2, local: ap("192.168.77.2:30000"), remote: ap("10.244.1.7:41000"), ok: true,
			want: api.Connection{Role: "server", VirtualLocal: ap("10.244.2.2:80"), VirtualRemote: ap("10.244.1.7:41000")},
		},
		{name: "another host's socket", t: t1, local: ap("192.168.77.2:30000"), remote: ap("192.168.77.1:20490")},
		{name: "a host socket outside the blocks", t: t1, local: ap("192.168.77.1:22"), remote: ap("192.168.77.2:50000")},
	} {
		c, ok := tc.t.classify(tc.local, tc.remote, "ESTABLISHED")
		if ok != tc.ok {
			t.Errorf("%s: classified %v, want %v", tc.name, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		tc.want.HostLocal, tc.want.HostRemote, tc.want.State = tc.local, tc.remote, "ESTABLISHED"
		if c != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, c, tc.want)
		}
	}
}
