package store

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
)

// TestRecordSchema pins what etcd holds. A change here is a change of the
// stored schema, which hosts of the previous version must still read: add
// optional fields, never rename one.
func TestRecordSchema(t *testing.T) {
	started := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	host := api.Host{Name: "h1", UnderlayIP: netip.MustParseAddr("192.168.77.1"), VTEPMAC: "02:00:00:00:00:01",
		Subnet4: netip.MustParsePrefix("10.244.1.0/24"), Subnet6: netip.MustParsePrefix("fd00:0:0:1::/64"), MTU: 1450, Started: started}
	ep := api.Endpoint{ContainerID: "c1", IfName: "eth0", Host: "h1", IPv4: netip.MustParseAddr("10.244.1.2"),
		IPv6: netip.MustParseAddr("fd00:0:0:1::2"), Labels: map[string]string{"app": "web"}, Netns: "/run/netns/c1", Created: started,
		PortBlocks: []api.PortBlock{{Start: 20480, Size: 256}, {Start: 20736, Size: 256, IPv6: true}},
		Ports:      []api.NamedPort{{Name: "http", Port: 80, Protocol: "TCP"}}}
	l := api.Listener{VIP: netip.MustParseAddr("10.244.1.2"), Port: 80, Host: "h1", HostIP: netip.MustParseAddr("192.168.77.1"),
		HostPort: 30000, ContainerID: "c1", IfName: "eth0"}
	for _, tc := range []struct {
		name   string
		encode func() ([]byte, error)
		decode func([]byte) (any, error)
		want   string
		value  any
	}{
		{"host", func() ([]byte, error) { return encodeHost(host) }, func(b []byte) (any, error) { return decodeHost(b) },
			`{"name":"h1","underlayIP":"192.168.77.1","vtepMAC":"02:00:00:00:00:01","subnet4":"10.244.1.0/24","subnet6":"fd00:0:0:1::/64","mtu":1450,"started":"2026-12-04T10:00:00Z"}`, host},
		{"endpoint", func() ([]byte, error) { return encodeEndpoint(ep) }, func(b []byte) (any, error) { return decodeEndpoint(b) },
			`{"containerID":"c1","ifName":"eth0","host":"h1","ipv4":"10.244.1.2","ipv6":"fd00:0:0:1::2","labels":{"app":"web"},"netns":"/run/netns/c1","created":"2026-12-04T10:00:00Z","portBlocks":[{"start":20480,"size":256},{"start":20736,"size":256,"ipv6":true}],"ports":[{"name":"http","port":80,"protocol":"TCP"}]}`, ep},
		{"listener", func() ([]byte, error) { return encodeListener(l) }, func(b []byte) (any, error) { return decodeListener(b) },
			`{"vip":"10.244.1.2","port":80,"host":"h1","hostIP":"192.168.77.1","hostPort":30000,"containerID":"c1","ifName":"eth0"}`, l},
	} {
		b, err := tc.encode()
		if err != nil || string(b) != tc.want {
			t.Errorf("%s stored as\n%s (%v)\nwant\n%s", tc.name, b, err, tc.want)
		}
		got, err := tc.decode([]byte(tc.want))
		if err != nil || !reflect.DeepEqual(got, tc.value) {
			t.Errorf("%s read back as %+v (%v), want %+v", tc.name, got, err, tc.value)
		}
	}
	// Optional fields absent (an IPv4-only host, an endpoint without
	// blocks) are left out, and unknown fields (a newer writer's) are
	// ignored.
	bare := api.Endpoint{ContainerID: "c2", IfName: "eth0", Host: "h1", IPv4: netip.MustParseAddr("10.244.1.3"), Netns: "/x", Created: started}
	if b, _ := encodeEndpoint(bare); string(b) != `{"containerID":"c2","ifName":"eth0","host":"h1","ipv4":"10.244.1.3","netns":"/x","created":"2026-12-04T10:00:00Z"}` {
		t.Errorf("minimal endpoint stored as %s", b)
	}
	if got, err := decodeListener([]byte(`{"vip":"10.244.1.2","port":80,"host":"h1","weight":3}`)); err != nil || got.Port != 80 {
		t.Errorf("record with an unknown field: %+v, %v", got, err)
	}
}
