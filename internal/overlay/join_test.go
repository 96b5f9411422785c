package overlay

import "testing"

func TestAssemble(t *testing.T) {
	const (
		m1 = "02:53:c0:a8:01:01"
		m2 = "02:53:c0:a8:01:02"
		m3 = "02:53:c0:a8:01:03"
	)
	tests := []struct {
		name   string
		routes []routeEntry
		neighs []neighEntry
		fdb    []fdbEntry
		want   []Peer
	}{
		{name: "nothing"},
		{name: "full peer, v4 and v6",
			routes: []routeEntry{
				{pfx("fd5a:11:0:2::/64"), addr("fd5a:11:0:2::")},
				{pfx("10.244.2.0/24"), addr("10.244.2.0")},
			},
			neighs: []neighEntry{{addr("10.244.2.0"), mac(m2)}, {addr("fd5a:11:0:2::"), mac(m2)}},
			fdb:    []fdbEntry{{mac(m2), addr("192.168.1.2")}},
			want:   []Peer{peer("", "10.244.2.0/24", "192.168.1.2", m2, "fd5a:11:0:2::/64")}},
		{name: "two peers",
			routes: []routeEntry{{pfx("10.244.3.0/24"), addr("10.244.3.0")}, {pfx("10.244.2.0/24"), addr("10.244.2.0")}},
			neighs: []neighEntry{{addr("10.244.2.0"), mac(m2)}, {addr("10.244.3.0"), mac(m3)}},
			fdb:    []fdbEntry{{mac(m3), addr("192.168.1.3")}, {mac(m2), addr("192.168.1.2")}},
			want: []Peer{
				peer("", "10.244.2.0/24", "192.168.1.2", m2),
				peer("", "10.244.3.0/24", "192.168.1.3", m3),
			}},
		{name: "route without neighbour",
			routes: []routeEntry{{pfx("10.244.2.0/24"), addr("10.244.2.0")}},
			want:   []Peer{{Subnet4: pfx("10.244.2.0/24")}}},
		{name: "neighbour without fdb",
			routes: []routeEntry{{pfx("10.244.2.0/24"), addr("10.244.2.0")}},
			neighs: []neighEntry{{addr("10.244.2.0"), mac(m2)}},
			want:   []Peer{{Subnet4: pfx("10.244.2.0/24"), VTEPMAC: mac(m2)}}},
		{name: "route via a foreign gateway is reported without mac",
			routes: []routeEntry{{pfx("10.244.2.0/24"), addr("10.244.9.9")}},
			neighs: []neighEntry{{addr("10.244.9.9"), mac(m2)}},
			fdb:    []fdbEntry{{mac(m2), addr("192.168.1.2")}},
			want: []Peer{
				{Subnet4: pfx("10.244.2.0/24")},
				{Subnet4: pfx("10.244.9.9/32"), VTEPMAC: mac(m2), UnderlayIP: addr("192.168.1.2")},
			}},
		{name: "ipv6 route that joins no ipv4 peer",
			routes: []routeEntry{{pfx("fd5a:11:0:2::/64"), addr("fd5a:11:0:2::")}},
			neighs: []neighEntry{{addr("fd5a:11:0:2::"), mac(m2)}},
			fdb:    []fdbEntry{{mac(m2), addr("192.168.1.2")}},
			want:   []Peer{{Subnet6: pfx("fd5a:11:0:2::/64"), VTEPMAC: mac(m2), UnderlayIP: addr("192.168.1.2")}}},
		{name: "leftover neighbours and fdb entry",
			neighs: []neighEntry{{addr("10.244.2.0"), mac(m2)}, {addr("fd5a:11:0:2::"), mac(m2)}},
			fdb:    []fdbEntry{{mac(m2), addr("192.168.1.2")}, {mac(m3), addr("192.168.1.3")}},
			want: []Peer{
				{Subnet4: pfx("10.244.2.0/32"), VTEPMAC: mac(m2), UnderlayIP: addr("192.168.1.2")},
				{Subnet6: pfx("fd5a:11:0:2::/128"), VTEPMAC: mac(m2), UnderlayIP: addr("192.168.1.2")},
				{VTEPMAC: mac(m3), UnderlayIP: addr("192.168.1.3")},
			}},
		{name: "shared mac: both peers report the fdb entry",
			routes: []routeEntry{{pfx("10.244.2.0/24"), addr("10.244.2.0")}, {pfx("10.244.9.0/24"), addr("10.244.9.0")}},
			neighs: []neighEntry{{addr("10.244.2.0"), mac(m1)}, {addr("10.244.9.0"), mac(m1)}},
			fdb:    []fdbEntry{{mac(m1), addr("192.168.1.1")}},
			want: []Peer{
				peer("", "10.244.2.0/24", "192.168.1.1", m1),
				peer("", "10.244.9.0/24", "192.168.1.1", m1),
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := assemble(tt.routes, tt.neighs, tt.fdb)
			if len(got) != len(tt.want) || !samePeers(got, tt.want) {
				t.Errorf("got%s\nwant%s", peersString(got), peersString(tt.want))
			}
			for i := 1; i < len(got); i++ {
				if comparePeers(got[i-1], got[i]) > 0 {
					t.Errorf("not sorted:%s", peersString(got))
				}
			}
		})
	}
}
