package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/testenv"
)

// newNS returns a fresh network namespace ("cnitest-" + random), removed
// when the test ends.
func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNS(t, n) })
	return n
}

// removeNS closes and unmounts n; doing it twice is harmless.
func removeNS(t *testing.T, n ns.NetNS) {
	t.Helper()
	_ = n.Close()
	if _, err := os.Stat(n.Path()); err == nil {
		if err := testutils.UnmountNS(n); err != nil {
			t.Errorf("remove netns: %v", err)
		}
	}
}

// liveStdout writes to whatever os.Stdout is at the time, so that
// testutils.CmdAdd, which swaps it for a pipe, captures the result.
type liveStdout struct{}

func (liveStdout) Write(b []byte) (int, error) { return os.Stdout.Write(b) }

// testEnv is a fake host namespace, a container namespace and a fake slimd.
// The plugin runs in the host namespace, never in the test's own.
type testEnv struct {
	t     *testing.T
	host  ns.NetNS
	cont  ns.NetNS
	slimd *fakeSlimd
	sock  string
	p     *plugin
}

func newEnv(t *testing.T, ipv6 bool) *testEnv {
	t.Helper()
	testenv.RequireRoot(t)
	e := &testEnv{t: t, host: newNS(t), cont: newNS(t), slimd: newFakeSlimd(ipv6)}
	e.sock = serveSlimd(t, e.slimd)
	e.p = &plugin{log: slog.New(slog.NewTextHandler(testWriter{t}, nil)), stdout: liveStdout{}}
	return e
}

// conf is a network configuration pointing at the fake slimd.
func (e *testEnv) conf(extra string) []byte {
	s := fmt.Sprintf(`"socket":%q`, e.sock)
	if extra != "" {
		s += "," + extra
	}
	return conf(s)
}

func (e *testEnv) args(containerID, ifName string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: containerID, Netns: e.cont.Path(), IfName: ifName, StdinData: e.conf("")}
}

func (e *testEnv) inHost(fn func() error) error {
	return e.host.Do(func(ns.NetNS) error { return fn() })
}

func (e *testEnv) inCont(fn func() error) error {
	return e.cont.Do(func(ns.NetNS) error { return fn() })
}

func (e *testEnv) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

// add runs ADD in the host namespace; the JSON is stdout exactly as the
// runtime would read it.
func (e *testEnv) add(args *skel.CmdArgs) (*current.Result, []byte, error) {
	var (
		res types.Result
		out []byte
	)
	err := e.inHost(func() error {
		var err error
		res, out, err = testutils.CmdAddWithArgs(args, func() error {
			return e.p.funcs(context.Background()).Add(args)
		})
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	r, err := current.GetResult(res)
	return r, out, err
}

func (e *testEnv) mustAdd(args *skel.CmdArgs) *current.Result {
	e.t.Helper()
	r, _, err := e.add(args)
	e.must(err)
	return r
}

func (e *testEnv) del(args *skel.CmdArgs) error {
	return e.inHost(func() error {
		return testutils.CmdDelWithArgs(args, func() error { return e.p.funcs(context.Background()).Del(args) })
	})
}

// check runs CHECK with prev as the prevResult.
func (e *testEnv) check(args *skel.CmdArgs, prev *current.Result) error {
	raw, err := json.Marshal(prev)
	e.must(err)
	a := *args
	a.StdinData = e.conf(`"prevResult":` + string(raw))
	return e.inHost(func() error {
		return testutils.CmdCheckWithArgs(&a, func() error { return e.p.funcs(context.Background()).Check(&a) })
	})
}

func (e *testEnv) gc(valid ...api.Attachment) error {
	var list []types.GCAttachment
	for _, a := range valid {
		list = append(list, types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	raw, err := json.Marshal(list)
	e.must(err)
	args := &skel.CmdArgs{StdinData: e.conf(`"cni.dev/valid-attachments":` + string(raw))}
	return e.inHost(func() error { return e.p.funcs(context.Background()).GC(args) })
}

// snapshot describes a namespace's links, addresses, routes (all tables)
// and neighbours, to compare before and after. It leaves out what the
// kernel adds by itself, in its own time, once a link is up: carrier, IPv6
// link-local addresses and their routes, multicast.
func snapshot(t *testing.T, n ns.NetNS) string {
	t.Helper()
	var lines []string
	err := n.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			a := l.Attrs()
			lines = append(lines, fmt.Sprintf("link %d %s %s mtu %d up=%v", a.Index, a.Name, l.Type(), a.MTU, a.Flags&net.FlagUp != 0))
		}
		addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && a.IP.To4() == nil {
				continue
			}
			lines = append(lines, fmt.Sprintf("addr %s dev %d", a.IPNet, a.LinkIndex))
		}
		routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil && r.Dst.IP.To4() == nil && (r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast()) {
				continue
			}
			lines = append(lines, "route "+r.String())
		}
		neighs, err := neighList(0, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, nb := range neighs {
			if nb.IP.IsMulticast() {
				continue // MLD's entries come and go by themselves
			}
			lines = append(lines, fmt.Sprintf("neigh %s %s dev %d state %#x", nb.IP, nb.HardwareAddr, nb.LinkIndex, nb.State))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", n.Path(), err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// linkNames lists the links of n.
func linkNames(t *testing.T, n ns.NetNS) []string {
	t.Helper()
	var names []string
	err := n.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// assertClean fails unless both namespaces hold only lo and the fake slimd
// holds no endpoint.
func (e *testEnv) assertClean() {
	e.t.Helper()
	if got := linkNames(e.t, e.host); !slices.Equal(got, []string{"lo"}) {
		e.t.Errorf("host namespace links %v, want only lo", got)
	}
	if got := linkNames(e.t, e.cont); !slices.Equal(got, []string{"lo"}) {
		e.t.Errorf("container namespace links %v, want only lo", got)
	}
	if got := e.slimd.attachments(); len(got) != 0 {
		e.t.Errorf("slimd still holds endpoints %v", got)
	}
}

func wantCode(t *testing.T, err error, code uint) {
	t.Helper()
	if got := errCode(err); got != code {
		t.Fatalf("error %v (code %d), want code %d", err, got, code)
	}
}

// attachmentState is what the kernel holds for one attachment, read back.
type attachmentState struct {
	contLink, hostLink netlink.Link
	contAddrs          []netlink.Addr
	contRoutes         []netlink.Route
	contNeighs         []netlink.Neigh
	hostRoutes         []netlink.Route
	hostNeighs         []netlink.Neigh
}

func (e *testEnv) readState(ifName, hostIfName string) attachmentState {
	e.t.Helper()
	var s attachmentState
	e.must(e.inCont(func() error {
		var err error
		if s.contLink, err = netlinksafe.LinkByName(ifName); err != nil {
			return err
		}
		if s.contAddrs, err = netlinksafe.AddrList(s.contLink, netlink.FAMILY_ALL); err != nil {
			return err
		}
		if s.contRoutes, err = netlinksafe.RouteList(s.contLink, netlink.FAMILY_ALL); err != nil {
			return err
		}
		s.contNeighs, err = neighList(s.contLink.Attrs().Index, netlink.FAMILY_ALL)
		return err
	}))
	e.must(e.inHost(func() error {
		var err error
		if s.hostLink, err = netlinksafe.LinkByName(hostIfName); err != nil {
			return err
		}
		if s.hostRoutes, err = netlinksafe.RouteList(s.hostLink, netlink.FAMILY_ALL); err != nil {
			return err
		}
		s.hostNeighs, err = neighList(s.hostLink.Attrs().Index, netlink.FAMILY_ALL)
		return err
	}))
	return s
}

// anyScope makes hasRoute ignore the scope.
const anyScope = netlink.SCOPE_NOWHERE

func hasRoute(routes []netlink.Route, dst string, gw string, scope netlink.Scope) bool {
	return slices.ContainsFunc(routes, func(r netlink.Route) bool {
		d := "default"
		if r.Dst != nil && !(r.Dst.IP.IsUnspecified() && maskOnes(r.Dst) == 0) {
			d = r.Dst.String()
		}
		g := ""
		if r.Gw != nil {
			g = r.Gw.String()
		}
		return d == dst && g == gw && (scope == anyScope || r.Scope == scope)
	})
}

func maskOnes(n *net.IPNet) int { ones, _ := n.Mask.Size(); return ones }

func hasPermanent(neighs []netlink.Neigh, ip string, mac net.HardwareAddr) bool {
	return slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
		return n.IP.String() == ip && n.State == netlink.NUD_PERMANENT && n.HardwareAddr.String() == mac.String()
	})
}

// connect opens a TCP connection from the container to hostAddr, an
// address the test puts on the host's loopback, and returns the client
// address the host saw: real packets over the attachment, both ways.
func (e *testEnv) connect(hostAddr netip.Addr) netip.Addr {
	e.t.Helper()
	var ln net.Listener
	e.must(e.inHost(func() error {
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		// NODAD: otherwise the address stays tentative, and bind fails,
		// until the kernel's DAD work has run, even on lo.
		if err := netlink.AddrReplace(lo, &netlink.Addr{IPNet: hostPrefix(hostAddr), Flags: unix.IFA_F_NODAD}); err != nil {
			return err
		}
		// The socket belongs to the namespace it was created in; the
		// goroutine serving it below may run anywhere.
		ln, err = net.Listen("tcp", netip.AddrPortFrom(hostAddr, 0).String())
		return err
	}))
	defer ln.Close()
	peer := make(chan netip.Addr, 1)
	go func() {
		defer close(peer)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		peer <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		_, _ = io.Copy(c, c)
	}()
	e.must(e.inCont(func() error {
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			return err
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			return fmt.Errorf("echo: %w", err)
		}
		return nil
	}))
	return <-peer
}
