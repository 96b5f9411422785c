//go:build linux

package daemon_test

// Multi-host behaviour of slimd on a real lab: hosts leaving and rejoining,
// and the datapath surviving slimd restarts.

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/labtest"
	"github.com/slimnet/slim/internal/poll"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// overlayState is what a host's kernel holds for one remote subnet.
type overlayState struct{ route, neigh, fdb bool }

// peerState reads host's neighbour, FDB and route entries for remote's
// subnet gateway (10.244.N.0) from the kernel.
func peerState(t *testing.T, host string, gw net.IP) overlayState {
	t.Helper()
	h := labtest.HostHandle(t, host)
	defer h.Close()
	var st overlayState
	link, err := h.LinkByName("slim-vxlan")
	if err != nil {
		t.Fatalf("%s: vxlan device: %v", host, err)
	}
	routes, _ := h.RouteList(link, netlink.FAMILY_V4)
	for _, r := range routes {
		if r.Gw.Equal(gw) {
			st.route = true
		}
	}
	neighs, _ := h.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	var mac net.HardwareAddr
	for _, n := range neighs {
		if n.IP.Equal(gw) {
			st.neigh = true
			mac = n.HardwareAddr
		}
	}
	fdb, _ := h.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
	for _, n := range fdb {
		if mac != nil && n.HardwareAddr.String() == mac.String() {
			st.fdb = true
		}
	}
	return st
}

// waitFor is poll.Until with what is awaited named in the failure.
func waitFor(t *testing.T, d time.Duration, what string, check func() error) {
	t.Helper()
	poll.Until(t, d, func() error {
		if err := check(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

func hostGateway(t *testing.T, cfg lab.Config, host string) net.IP {
	t.Helper()
	ls, err := lab.List(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range ls.Hosts {
		if h.Name == host {
			if !h.Subnet4.IsValid() {
				t.Fatalf("%s has no subnet in listing", host)
			}
			return net.IP(h.Subnet4.Masked().Addr().AsSlice())
		}
	}
	t.Fatalf("host %s not listed", host)
	return nil
}

// A host whose slimd stops disappears from the other hosts' neighbour, FDB
// and route tables when its lease expires, and comes back when it rejoins.
func TestHostLeavesAndRejoins(t *testing.T) {
	const ttl = 3 * time.Second
	l := labtest.New(t, labtest.Hosts(3), labtest.LeaseTTL(ttl))
	ctx := t.Context()
	gw3 := hostGateway(t, l.Config, "h3")
	for _, h := range []string{"h1", "h2"} {
		if st := peerState(t, h, gw3); st != (overlayState{true, true, true}) {
			t.Fatalf("%s before leave: %+v", h, st)
		}
	}
	if err := lab.StopSlimd(ctx, l.Config, "h3", unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Within the TTL the host is still there: a restart in time is
	// invisible (checked right after the stop).
	if st := peerState(t, "h1", gw3); !st.route {
		t.Fatalf("h1 dropped h3 before its lease expired: %+v", st)
	}
	for _, h := range []string{"h1", "h2"} {
		waitFor(t, 4*ttl, h+" forgets h3", func() error {
			if st := peerState(t, h, gw3); st != (overlayState{}) {
				return fmt.Errorf("%+v", st)
			}
			return nil
		})
	}
	// h3 keeps its own datapath while slimd is away.
	if st := peerState(t, "h3", hostGateway(t, l.Config, "h1")); !st.route {
		t.Fatalf("h3 lost its own overlay entries when slimd stopped: %+v", st)
	}
	if err := lab.Up(ctx, l.Config); err != nil { // restarts h3's slimd
		t.Fatal(err)
	}
	if got := hostGateway(t, l.Config, "h3"); !got.Equal(gw3) {
		t.Fatalf("h3 rejoined with subnet gateway %v, had %v", got, gw3)
	}
	for _, h := range []string{"h1", "h2"} {
		waitFor(t, 10*time.Second, h+" relearns h3", func() error {
			if st := peerState(t, h, gw3); st != (overlayState{true, true, true}) {
				return fmt.Errorf("%+v", st)
			}
			return nil
		})
	}
}

// A TCP stream between containers on two hosts keeps moving bytes, on the
// same connection, while either host's slimd restarts (h1's restart also
// restarts the embedded etcd).
func TestStreamSurvivesSlimdRestart(t *testing.T) {
	l := labtest.New(t, labtest.Hosts(2))
	ctx := t.Context()
	sinkFile := filepath.Join(t.TempDir(), "sink")
	sink := l.Run(lab.RunSpec{Host: "h1", Name: "sink", Command: []string{"socat", "-u", "TCP-LISTEN:7100", "CREATE:" + sinkFile}})
	// One line every 20 ms over a single connection; socat exits (and the
	// container with it) if the connection breaks.
	src := l.Run(lab.RunSpec{Host: "h2", Name: "source", Command: []string{"sh", "-c",
		fmt.Sprintf("sleep 0.5; while :; do echo tick; sleep 0.02; done | socat -u - TCP:%s:7100", sink.IPv4)}})
	size := func() int64 {
		fi, err := os.Stat(sinkFile)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	growing := func(what string) {
		t.Helper()
		start := size()
		waitFor(t, 10*time.Second, what, func() error {
			if size() < start+200 {
				return fmt.Errorf("sink at %d bytes, was %d", size(), start)
			}
			return nil
		})
	}
	growing("stream starts")
	for _, host := range []string{"h2", "h1"} {
		if err := lab.StopSlimd(ctx, l.Config, host, unix.SIGTERM); err != nil {
			t.Fatal(err)
		}
		growing("stream moves while " + host + "'s slimd is down")
		if err := lab.Up(ctx, l.Config); err != nil {
			t.Fatal(err)
		}
		growing("stream moves after " + host + "'s slimd restarted")
	}
	// Same connection throughout: both socat processes are the original ones.
	ls, err := lab.List(ctx, l.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ls.Containers {
		if (c.Name == sink.Name || c.Name == src.Name) && !c.Alive {
			t.Fatalf("container %s exited: its connection broke", c.Name)
		}
	}
	if n := strings.Count(readFile(t, sinkFile), "tick"); n < 50 {
		t.Fatalf("only %d lines arrived", n)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Containers on the same host and on different hosts reach each other over
// TCP, UDP and ICMP, on IPv4 and IPv6.
func TestConnectivity(t *testing.T) {
	l := labtest.New(t, labtest.Hosts(3), labtest.IPv6())
	ctx := t.Context()
	// Each container serves a TCP and a UDP echo on port 7200 (both
	// families) and otherwise idles.
	server := []string{"sh", "-c",
		"socat TCP6-LISTEN:7200,fork,reuseaddr,ipv6only=0 EXEC:cat & " +
			"socat UDP6-RECVFROM:7200,fork,ipv6only=0 EXEC:cat & wait"}
	c := map[string]lab.Container{}
	for _, spec := range []struct{ host, name string }{{"h1", "a"}, {"h1", "b"}, {"h2", "c"}, {"h3", "d"}} {
		c[spec.name] = l.Run(lab.RunSpec{Host: spec.host, Name: spec.name, Command: server})
	}
	pairs := []struct{ from, to string }{
		{"a", "b"}, // same host
		{"b", "a"},
		{"a", "c"}, // h1 -> h2
		{"c", "d"}, // h2 -> h3
		{"d", "a"}, // h3 -> h1
	}
	for _, p := range pairs {
		for _, fam := range []string{"4", "6"} {
			dst := c[p.to].IPv4.String()
			tcp, udp := "TCP4:"+dst+":7200", "UDP4:"+dst+":7200"
			if fam == "6" {
				dst = c[p.to].IPv6.String()
				tcp, udp = "TCP6:["+dst+"]:7200", "UDP6:["+dst+"]:7200"
			}
			t.Run(fmt.Sprintf("%s-%s-v%s", p.from, p.to, fam), func(t *testing.T) {
				l.Output(ctx, p.from, "ping", "-"+fam, "-c", "1", "-W", "2", dst)
				msg := fmt.Sprintf("hello %s from %s", p.to, p.from)
				for _, addr := range []string{tcp, udp} {
					waitFor(t, 10*time.Second, addr, func() error {
						out, err := lab.Output(ctx, l.Config, p.from, "sh", "-c",
							fmt.Sprintf("echo '%s' | socat -t 1 - %s,connect-timeout=2", msg, addr))
						if err != nil {
							return err
						}
						if strings.TrimSpace(string(out)) != msg {
							return fmt.Errorf("echo returned %q", out)
						}
						return nil
					})
				}
			})
		}
	}
}
