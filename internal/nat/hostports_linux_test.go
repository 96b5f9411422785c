package nat

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/slimnet/slim/internal/testenv"
)

// TestHostPorts: a listener's host port takes connections only from the
// cluster's hosts, from a source port of the fast path's range (of an
// allowed block for a guarded listener); others get a reset at once.
func TestHostPorts(t *testing.T) {
	testenv.RequireRoot(t)
	host, _, other := routed(t)
	listen(t, host, "192.168.99.1:30000")
	listen(t, host, "192.168.99.1:30001") // no listener of the filter's
	var tb *Table
	if err := host.Do(func(ns.NetNS) (err error) { tb, err = New(-1); return err }); err != nil {
		t.Fatal(err)
	}
	sync := func(hp HostPorts) {
		t.Helper()
		if err := host.Do(func(ns.NetNS) error { return tb.SyncHostPorts(hp) }); err != nil {
			t.Fatal(err)
		}
	}
	next := uint16(20480)
	// connect from source port sport (0: an ordinary ephemeral one).
	connect := func(to string, sport uint16) error {
		if sport == 0 {
			return dial(other, to)
		}
		return other.Do(func(ns.NetNS) error {
			d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("192.168.99.2"), Port: int(sport)}}
			c, err := d.Dial("tcp", to)
			if err != nil {
				return err
			}
			c.Close()
			return nil
		})
	}
	check := func(what, to string, sport uint16, want bool) {
		t.Helper()
		if sport != 0 {
			sport, next = next+sport, next+256 // a fresh port of block (sport-1)
		}
		start := time.Now()
		err := connect(to, sport)
		switch {
		case want && err != nil:
			t.Errorf("%s: %v", what, err)
		case !want && err == nil:
			t.Errorf("%s: connected", what)
		case !want && !errors.Is(err, syscall.ECONNREFUSED):
			t.Errorf("%s: %v, want a reset (connection refused)", what, err)
		case !want && time.Since(start) > 500*time.Millisecond:
			t.Errorf("%s: refused after %v, want at once", what, time.Since(start))
		}
	}
	check("no filter", "192.168.99.1:30000", 0, true)
	sync(HostPorts{Open: []uint16{30000}, Hosts: []netip.Addr{netip.MustParseAddr("192.168.99.2")}, First: 20480, Last: 32767})
	check("ephemeral source port", "192.168.99.1:30000", 0, false)
	check("fast-path source port", "192.168.99.1:30000", 1, true)
	check("not a listener port", "192.168.99.1:30001", 0, true)
	sync(HostPorts{Open: []uint16{30000}, Hosts: []netip.Addr{netip.MustParseAddr("192.168.99.9")}, First: 20480, Last: 32767})
	check("not a cluster host", "192.168.99.1:30000", 1, false)

	// Guarded: only the allowed block's ports pass.
	blockStart := next
	sync(HostPorts{Guarded: []uint16{30000}, First: 20480, Last: 32767,
		Allow: []HostPortAllow{{Port: 30000, Host: netip.MustParseAddr("192.168.99.2"), First: blockStart, Last: blockStart + 255}}})
	check("allowed block", "192.168.99.1:30000", 1, true)
	check("another block", "192.168.99.1:30000", 1, false)
	sync(HostPorts{})
	check("filter empty", "192.168.99.1:30000", 0, true)
	if err := host.Do(func(ns.NetNS) error { return tb.Remove() }); err != nil {
		t.Fatal(err)
	}
}
