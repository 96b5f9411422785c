package nat

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/slimnet/slim/internal/policy"
	"github.com/slimnet/slim/internal/testenv"
)

// TestPolicyFilter: the policy chains on a routing host drop what a
// container's filter does not allow, in both directions, and pass replies
// of allowed connections; an empty filter allows everything again.
func TestPolicyFilter(t *testing.T) {
	testenv.RequireRoot(t)
	host, client, other := routed(t)
	listen(t, other, "192.168.99.2:8080")
	listen(t, other, "192.168.99.2:8081")
	listen(t, client, "192.168.88.2:9000")
	var tb *Table
	if err := host.Do(func(ns.NetNS) (err error) { tb, err = New(-1); return err }); err != nil {
		t.Fatal(err)
	}
	sync := func(f policy.Filter) {
		t.Helper()
		if err := host.Do(func(ns.NetNS) error { return tb.SyncPolicy(f) }); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, from ns.NetNS, to string, want bool) {
		t.Helper()
		err := dial(from, to)
		// A connection that should pass gets two more tries: on a loaded
		// machine a fresh veth path can lose the first SYN, and the
		// retransmission comes after dial's one-second timeout.
		for i := 0; want && err != nil && i < 2; i++ {
			err = dial(from, to)
		}
		if (err == nil) != want {
			t.Errorf("%s (%s): %v, want reachable %v", what, to, err, want)
		}
	}
	udp := func(from ns.NetNS, to string) bool {
		t.Helper()
		ok := false
		from.Do(func(ns.NetNS) error {
			c, err := net.DialTimeout("udp", to, time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(500 * time.Millisecond))
			c.Write([]byte("ping"))
			b := make([]byte, 4)
			n, err := c.Read(b)
			ok = err == nil && string(b[:n]) == "pong"
			return nil
		})
		return ok
	}
	// A UDP echo on the other host, port 5353.
	other.Do(func(ns.NetNS) error {
		pc, err := net.ListenPacket("udp", "192.168.99.2:5353")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		go func() {
			b := make([]byte, 64)
			for {
				_, a, err := pc.ReadFrom(b)
				if err != nil {
					return
				}
				pc.WriteTo([]byte("pong"), a)
			}
		}()
		return nil
	})

	c, o := netip.MustParseAddr("192.168.88.2"), netip.MustParsePrefix("192.168.99.2/32")
	check("no policy", client, "192.168.99.2:8081", true)
	check("no policy", other, "192.168.88.2:9000", true)

	// The container may send TCP to 8080 and UDP to 5353 only; nothing
	// may come in.
	sync(policy.Filter{
		IsolatedEgress:  []netip.Addr{c},
		Egress:          []policy.Allow{{Local: c, Peer: o, Proto: policy.ProtocolTCP, First: 8080, Last: 8080}, {Local: c, Peer: netip.MustParsePrefix("192.168.99.0/24"), Proto: policy.ProtocolUDP, First: 5000, Last: 6000}},
		IsolatedIngress: []netip.Addr{c},
	})
	check("egress allowed (the reply passes)", client, "192.168.99.2:8080", true)
	check("egress to another port", client, "192.168.99.2:8081", false)
	check("ingress isolated", other, "192.168.88.2:9000", false)
	if !udp(client, "192.168.99.2:5353") {
		t.Error("UDP in the allowed range dropped")
	}

	// An allow-all ingress rule (no ports) lets the other host in; UDP
	// outside the range is dropped.
	sync(policy.Filter{
		IsolatedEgress:  []netip.Addr{c},
		Egress:          []policy.Allow{{Local: c, Peer: o, Proto: policy.ProtocolUDP, First: 53, Last: 53}},
		IsolatedIngress: []netip.Addr{c},
		Ingress:         []policy.Allow{{Local: c, Peer: netip.MustParsePrefix("192.168.99.0/24")}},
	})
	check("ingress allowed", other, "192.168.88.2:9000", true)
	check("egress no longer allowed", client, "192.168.99.2:8080", false)
	if udp(client, "192.168.99.2:5353") {
		t.Error("UDP outside the allowed ports passed")
	}

	sync(policy.Filter{})
	check("policies gone", client, "192.168.99.2:8081", true)
	check("policies gone", other, "192.168.88.2:9000", true)
	if err := host.Do(func(ns.NetNS) error { return tb.Remove() }); err != nil {
		t.Fatal(err)
	}
}
