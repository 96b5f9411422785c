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

	// Guarded: only the allowed block's ports pass; another known block
	// gets a reset.
	client := netip.MustParseAddr("192.168.99.2")
	blockStart := next
	guarded := HostPorts{Guarded: []uint16{30000}, Hosts: []netip.Addr{client}, First: 20480, Last: 32767,
		Allow: []HostPortAllow{{Port: 30000, Host: client, First: blockStart, Last: blockStart + 255}},
		Known: []HostPortBlock{{client, blockStart, blockStart + 255}, {client, blockStart + 256, blockStart + 511}}}
	sync(guarded)
	check("allowed block", "192.168.99.1:30000", 1, true)
	check("a known block the policies leave out", "192.168.99.1:30000", 1, false)
	check("guarded, ephemeral source port", "192.168.99.1:30000", 0, false)

	// A block not known yet (claimed a moment ago on the client's host)
	// is dropped, not reset: the client's SYN comes again after a second
	// and passes once the block's record has arrived and allows it.
	unknown := next + 1
	next += 256
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- other.Do(func(ns.NetNS) error {
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: client.AsSlice(), Port: int(unknown)}}
			c, err := d.Dial("tcp", "192.168.99.1:30000")
			if err == nil {
				c.Close()
			}
			return err
		})
	}()
	time.Sleep(300 * time.Millisecond) // the SYN is out, and dropped
	select {
	case err := <-done:
		t.Fatalf("a block not known yet: the connect ended before its block arrived (%v), want its SYN dropped", err)
	default:
	}
	guarded.Allow = append(guarded.Allow, HostPortAllow{Port: 30000, Host: client, First: unknown - 1, Last: unknown + 254})
	guarded.Known = append(guarded.Known, HostPortBlock{client, unknown - 1, unknown + 254})
	sync(guarded)
	if err := <-done; err != nil {
		t.Errorf("a block not known yet, then allowed: %v", err)
	} else if el := time.Since(start); el < 900*time.Millisecond || el > 4*time.Second {
		t.Errorf("a block not known yet, then allowed: connected after %v, want after the SYN's first retransmission (1 s)", el)
	}
	sync(HostPorts{})
	check("filter empty", "192.168.99.1:30000", 0, true)
	if err := host.Do(func(ns.NetNS) error { return tb.Remove() }); err != nil {
		t.Fatal(err)
	}
}
