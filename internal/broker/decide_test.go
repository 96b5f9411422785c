package broker

import (
	"net/netip"
	"testing"

	"github.com/slimnet/slim/internal/api"
)

type fakeView struct {
	off       bool
	listeners map[netip.AddrPort]api.Listener
}

func (f fakeView) FastPath() bool { return !f.off }
func (f fakeView) Listener(vip netip.Addr, port uint16) (api.Listener, bool) {
	l, ok := f.listeners[netip.AddrPortFrom(vip, port)]
	return l, ok
}

func TestRouteConnect(t *testing.T) {
	me := &Container{ID: "me", VIP4: netip.MustParseAddr("10.244.0.2"), VIP6: netip.MustParseAddr("fd5a::2")}
	web := api.Listener{VIP: netip.MustParseAddr("10.244.1.5"), Port: 80, HostIP: netip.MustParseAddr("192.168.77.2"), HostPort: 20480}
	self := api.Listener{VIP: me.VIP4, Port: 8080, HostIP: netip.MustParseAddr("192.168.77.1"), HostPort: 20481}
	self6 := api.Listener{VIP: me.VIP6, Port: 8080, HostIP: netip.MustParseAddr("192.168.77.1"), HostPort: 20482}
	v := fakeView{listeners: map[netip.AddrPort]api.Listener{
		netip.MustParseAddrPort("10.244.1.5:80"):   web,
		netip.MustParseAddrPort("10.244.0.2:8080"): self,
		netip.MustParseAddrPort("[fd5a::2]:8080"):  self6,
	}}
	for _, tc := range []struct {
		name   string
		dst    string
		c      *Container
		v      View
		want   api.Listener
		reason Reason
	}{
		{"published", "10.244.1.5:80", me, v, web, ""},
		{"other port", "10.244.1.5:81", me, v, api.Listener{}, ReasonNoListener},
		{"not a vip", "192.168.77.2:20480", me, v, api.Listener{}, ReasonNoListener},
		{"loopback to own listener", "127.0.0.1:8080", me, v, self, ""},
		{"loopback other 127/8", "127.0.0.53:8080", me, v, self, ""},
		{"v6 loopback", "[::1]:8080", me, v, self6, ""},
		{"own vip", "10.244.0.2:8080", me, v, self, ""},
		{"loopback no listener", "127.0.0.1:9999", me, v, api.Listener{}, ReasonNoListener},
		{"switch off", "10.244.1.5:80", me, fakeView{off: true, listeners: v.listeners}, api.Listener{}, ReasonDisabled},
		{"no-slim container", "10.244.1.5:80", &Container{VIP4: me.VIP4, NoSlim: true}, v, api.Listener{}, ReasonNotSlim},
		{"unknown container", "10.244.1.5:80", nil, v, api.Listener{}, ReasonNotSlim},
		{"port zero", "10.244.1.5:0", me, v, api.Listener{}, ReasonNoListener},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := routeConnect(netip.MustParseAddrPort(tc.dst), tc.c, tc.v)
			if got != tc.want || reason != tc.reason {
				t.Fatalf("got %+v %q, want %+v %q", got, reason, tc.want, tc.reason)
			}
		})
	}
}

func TestListenVIPs(t *testing.T) {
	me := &Container{VIP4: netip.MustParseAddr("10.244.0.2"), VIP6: netip.MustParseAddr("fd5a::2")}
	v4only := &Container{VIP4: netip.MustParseAddr("10.244.0.3")}
	v := fakeView{}
	for _, tc := range []struct {
		name   string
		bound  string
		v6only bool
		c      *Container
		want   []string
		reason Reason
	}{
		{"v4 wildcard", "0.0.0.0:80", false, me, []string{"10.244.0.2:80"}, ""},
		{"v6 wildcard dual stack", "[::]:80", false, me, []string{"[fd5a::2]:80", "10.244.0.2:80"}, ""},
		{"v6 wildcard v6only", "[::]:80", true, me, []string{"[fd5a::2]:80"}, ""},
		{"v6 wildcard, no v6 vip", "[::]:80", false, v4only, []string{"10.244.0.3:80"}, ""},
		{"v6 only, no v6 vip", "[::]:80", true, v4only, nil, ReasonLocalOnly},
		{"own vip", "10.244.0.2:80", false, me, []string{"10.244.0.2:80"}, ""},
		{"loopback", "127.0.0.1:80", false, me, nil, ReasonLocalOnly},
		{"unbound", "0.0.0.0:0", false, me, nil, ReasonLocalOnly},
		{"other address", "10.9.9.9:80", false, me, nil, ReasonLocalOnly},
		{"no-slim", "0.0.0.0:80", false, &Container{VIP4: me.VIP4, NoSlim: true}, nil, ReasonNotSlim},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := listenVIPs(netip.MustParseAddrPort(tc.bound), tc.v6only, tc.c, v)
			if reason != tc.reason || len(got) != len(tc.want) {
				t.Fatalf("got %v %q, want %v %q", got, reason, tc.want, tc.reason)
			}
			for i := range got {
				if got[i].String() != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
	if _, r := listenVIPs(netip.MustParseAddrPort("0.0.0.0:80"), false, me, fakeView{off: true}); r != ReasonDisabled {
		t.Fatalf("switch off: %q", r)
	}
}
