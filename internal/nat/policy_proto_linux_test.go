package nat

import (
	"encoding/binary"
	"hash/crc32"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/policy"
	"github.com/slimnet/slim/internal/poll"
	"github.com/slimnet/slim/internal/testenv"
)

// TestPolicyFilterProtocols: the policy chains for the protocols the TCP
// and UDP test leaves out: TCP over IPv6, ICMP (ping) and SCTP. This
// kernel has no SCTP sockets (CONFIG_IP_SCTP unset), so SCTP INIT packets
// are sent and watched with raw sockets: the filter sees them as any
// SCTP stack's.
func TestPolicyFilterProtocols(t *testing.T) {
	testenv.RequireRoot(t)
	host, client, other := routed(t)
	// IPv6 beside the IPv4 of routed.
	for _, x := range []struct {
		n        ns.NetNS
		ifname   string
		addr, gw string
	}{{client, "c0", "fd88::2/64", "fd88::1"}, {other, "o0", "fd99::2/64", "fd99::1"}} {
		err := x.n.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(x.ifname)
			if err != nil {
				return err
			}
			a, _ := netlink.ParseAddr(x.addr)
			a.Flags = unix.IFA_F_NODAD
			if err := netlink.AddrAdd(l, a); err != nil {
				return err
			}
			return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(x.gw)})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := host.Do(func(ns.NetNS) error { return writeSysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1") }); err != nil {
		t.Fatal(err)
	}
	listen(t, other, "[fd99::2]:8080")
	listen(t, other, "[fd99::2]:8081")
	var tb *Table
	if err := host.Do(func(ns.NetNS) (err error) { tb, err = New(-1); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Do(func(ns.NetNS) error { return tb.Remove() }) })
	sync := func(f policy.Filter) {
		t.Helper()
		if err := host.Do(func(ns.NetNS) error { return tb.SyncPolicy(f) }); err != nil {
			t.Fatal(err)
		}
	}
	ping := func(from ns.NetNS, to string) bool {
		t.Helper()
		var err error
		from.Do(func(ns.NetNS) error {
			// The child inherits the netns of the thread Do locked.
			err = exec.Command("ping", "-c", "1", "-W", "1", to).Run()
			return nil
		})
		return err == nil
	}
	sctp := sctpProbe(t, other, "192.168.99.2")
	c4, c6 := netip.MustParseAddr("192.168.88.2"), netip.MustParseAddr("fd88::2")
	anyPeer4, anyPeer6 := netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")

	if !ping(client, "192.168.99.2") || !ping(other, "192.168.88.2") || !sctp(client, 9899) {
		t.Fatal("no policy: ping or SCTP does not pass")
	}
	checkTCP := func(what, to string, want bool) {
		t.Helper()
		if err := dial(client, to); (err == nil) != want {
			t.Errorf("%s (%s): %v, want reachable %v", what, to, err, want)
		}
	}
	// The first packets wait for neighbour discovery on both links.
	poll.Until(t, 10*time.Second, func() error { return dial(client, "[fd99::2]:8081") })

	// The container (both families) may send TCP to 8080 and SCTP to
	// 9899; nothing may come in.
	sync(policy.Filter{
		IsolatedEgress: []netip.Addr{c4, c6},
		Egress: []policy.Allow{
			{Local: c6, Peer: anyPeer6, Proto: policy.ProtocolTCP, First: 8080, Last: 8080},
			{Local: c4, Peer: anyPeer4, Proto: policy.ProtocolSCTP, First: 9899, Last: 9899},
		},
		IsolatedIngress: []netip.Addr{c4, c6},
	})
	checkTCP("IPv6 egress allowed (the reply passes)", "[fd99::2]:8080", true)
	checkTCP("IPv6 egress to another port", "[fd99::2]:8081", false)
	if !sctp(client, 9899) {
		t.Error("SCTP to the allowed port dropped")
	}
	if sctp(client, 9900) {
		t.Error("SCTP to another port passed")
	}
	if ping(client, "192.168.99.2") {
		t.Error("ping out passed: no rule allows ICMP")
	}
	if ping(other, "192.168.88.2") {
		t.Error("ping in passed: ingress is isolated")
	}

	// A rule without ports allows every protocol, ICMP included.
	sync(policy.Filter{
		IsolatedIngress: []netip.Addr{c4},
		Ingress:         []policy.Allow{{Local: c4, Peer: netip.MustParsePrefix("192.168.99.0/24")}},
	})
	if !ping(other, "192.168.88.2") {
		t.Error("ping in dropped: the rule has no ports, so every protocol is allowed")
	}
	sync(policy.Filter{})
	checkTCP("policies gone, IPv6", "[fd99::2]:8081", true)
}

// sctpProbe watches for SCTP packets arriving at addr in n and returns a
// function that sends an SCTP INIT from another namespace to addr:port
// and says whether it arrived.
func sctpProbe(t *testing.T, n ns.NetNS, addr string) func(from ns.NetNS, port uint16) bool {
	t.Helper()
	var rfd int
	err := n.Do(func(ns.NetNS) (err error) {
		rfd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(rfd) })
	unix.SetsockoptTimeval(rfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 300000})
	dst := netip.MustParseAddr(addr).As4()
	tag := uint32(0x5117)
	return func(from ns.NetNS, port uint16) bool {
		t.Helper()
		tag++
		pkt := make([]byte, 32)
		binary.BigEndian.PutUint16(pkt[0:], 40000)  // source port
		binary.BigEndian.PutUint16(pkt[2:], port)   // destination port
		pkt[12] = 1                                 // chunk INIT
		binary.BigEndian.PutUint16(pkt[14:], 20)    // chunk length
		binary.BigEndian.PutUint32(pkt[16:], tag)   // initiate tag
		binary.BigEndian.PutUint32(pkt[20:], 65536) // a_rwnd
		binary.BigEndian.PutUint16(pkt[24:], 1)     // outbound streams
		binary.BigEndian.PutUint16(pkt[26:], 1)     // inbound streams
		binary.BigEndian.PutUint32(pkt[28:], tag)   // initial TSN
		binary.LittleEndian.PutUint32(pkt[8:], crc32.Checksum(pkt, crc32.MakeTable(crc32.Castagnoli)))
		err := from.Do(func(ns.NetNS) error {
			s, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
			if err != nil {
				return err
			}
			defer unix.Close(s)
			return unix.Sendto(s, pkt, 0, &unix.SockaddrInet4{Addr: dst})
		})
		if err != nil {
			t.Fatalf("send SCTP INIT: %v", err)
		}
		deadline := time.Now().Add(time.Second)
		buf := make([]byte, 1500)
		for time.Now().Before(deadline) {
			m, _, err := unix.Recvfrom(rfd, buf, 0)
			if err != nil {
				continue // timed out: look again until the deadline
			}
			ihl := int(buf[0]&0x0f) * 4
			if m >= ihl+32 && binary.BigEndian.Uint16(buf[ihl+2:]) == port && binary.BigEndian.Uint32(buf[ihl+16:]) == tag {
				return true
			}
		}
		return false
	}
}
