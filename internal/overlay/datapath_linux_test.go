package overlay

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/poll"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// exchangeTimeout bounds one UDP round trip inside the test namespaces,
// where a working round trip takes well under a millisecond.
const exchangeTimeout = 300 * time.Millisecond

// host is one test "host": a namespace with an underlay address on the wire
// and an overlay device.
type host struct {
	tn  *testNS
	dev *Device
	dp  *netlinkDataplane
}

// newHostPair builds two hosts joined by a veth pair on 192.168.77.0/24, each
// with its vxlan device (10.244.1.0/24 and 10.244.2.0/24, plus IPv6).
func newHostPair(t *testing.T) (a, b *host) {
	t.Helper()
	tnA, tnB := newTestNS(t), newTestNS(t)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "ula"},
		PeerName:      "ulb",
		PeerNamespace: netlink.NsFd(int(netns.NsHandle(tnB.ns.Fd()))),
	}
	must(t, tnA.h.LinkAdd(veth))
	tnA.setUp(t, "ula", "192.168.77.1/24")
	tnB.setUp(t, "ulb", "192.168.77.2/24")

	mk := func(tn *testNS, n int) *host {
		dev, err := tn.ensureDevice(t, DeviceConfig{
			UnderlayIP: addr(fmt.Sprintf("192.168.77.%d", n)),
			Subnet4:    pfx(fmt.Sprintf("10.244.%d.0/24", n)),
			Subnet6:    pfx(fmt.Sprintf("fd5a:11:0:%d::/64", n)),
		})
		if err != nil {
			t.Fatal(err)
		}
		return &host{tn: tn, dev: dev, dp: newDataplane(dev, tn.h)}
	}
	return mk(tnA, 1), mk(tnB, 2)
}

// udpEcho listens on ip (inside h's namespace) and echoes every datagram
// until the test ends.
func udpEcho(t *testing.T, h *host, ip netip.Addr) netip.AddrPort {
	t.Helper()
	var conn *net.UDPConn
	h.tn.do(t, func() error {
		var err error
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		return err
	})
	t.Cleanup(func() { _ = conn.Close() })
	go func() { // ends when Cleanup closes conn
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// exchange sends one datagram from h's namespace to dst and waits for the
// echo.
func exchange(t *testing.T, h *host, dst netip.AddrPort, msg string) error {
	t.Helper()
	var conn *net.UDPConn
	var dialErr error
	h.tn.do(t, func() error {
		conn, dialErr = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		return nil
	})
	if dialErr != nil {
		return dialErr
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(exchangeTimeout)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != msg {
		return fmt.Errorf("echo %q, want %q", buf[:n], msg)
	}
	return nil
}

// counters returns the vxlan device's tx and rx packet counters.
func counters(t *testing.T, h *host) (tx, rx uint64) {
	t.Helper()
	l, err := h.tn.h.LinkByIndex(h.dev.Index)
	must(t, err)
	return l.Attrs().Statistics.TxPackets, l.Attrs().Statistics.RxPackets
}

// TestRealBytes moves datagrams from host A to host B's gateway addresses
// through the vxlan devices, then removes the peer and checks that they stop.
func TestRealBytes(t *testing.T) {
	a, b := newHostPair(t)
	ctx := t.Context()
	must(t, a.dp.EnsurePeer(ctx, b.dev.Peer("b")))
	must(t, b.dp.EnsurePeer(ctx, a.dev.Peer("a")))

	targets := map[string]netip.AddrPort{
		"ipv4": udpEcho(t, b, b.dev.Subnet4.Addr()),
		"ipv6": udpEcho(t, b, b.dev.Subnet6.Addr()),
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) {
			dst := targets[fam]
			txA, _ := counters(t, a)
			_, rxB := counters(t, b)
			i := 0
			poll.Until(t, 5*time.Second, func() error {
				i++
				return exchange(t, a, dst, fmt.Sprintf("%s %d", fam, i))
			})
			// A encapsulated, B decapsulated: the bytes went through VXLAN.
			if got, _ := counters(t, a); got <= txA {
				t.Errorf("host A vxlan tx packets %d -> %d, want a rise", txA, got)
			}
			if _, got := counters(t, b); got <= rxB {
				t.Errorf("host B vxlan rx packets %d -> %d, want a rise", rxB, got)
			}
		})
	}

	must(t, a.dp.RemovePeer(ctx, b.dev.Peer("b")))
	for fam, dst := range targets {
		err := exchange(t, a, dst, "after removal")
		if err == nil {
			t.Errorf("%s: exchange with %s still works after RemovePeer", fam, dst)
		}
		t.Logf("%s after removal: %v", fam, err) // no route: ENETUNREACH
	}
	checkPeers(t, a.dp)
}
