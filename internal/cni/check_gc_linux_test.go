package cni

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/slimnet/slim/internal/api"
)

func TestCheckDetectsDrift(t *testing.T) {
	tests := []struct {
		name  string
		where string // "cont" or "host"
		brk   func(hostName string) error
		want  string
	}{
		{"default route", "cont", func(string) error {
			return netlink.RouteDel(&netlink.Route{Dst: nil, Gw: net.ParseIP("169.254.1.1")})
		}, "not found in routing table"},
		{"address", "cont", func(string) error {
			l, err := netlinksafe.LinkByName("eth0")
			if err != nil {
				return err
			}
			addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V4)
			if err != nil || len(addrs) == 0 {
				return fmt.Errorf("addresses %v: %w", addrs, err)
			}
			return netlink.AddrDel(l, &addrs[0])
		}, "lacks address"},
		{"gateway neighbour", "cont", func(string) error {
			l, err := netlinksafe.LinkByName("eth0")
			if err != nil {
				return err
			}
			return netlink.NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, IP: net.ParseIP("169.254.1.1")})
		}, "no permanent neighbour 169.254.1.1"},
		{"link down", "cont", func(string) error {
			l, err := netlinksafe.LinkByName("eth0")
			if err != nil {
				return err
			}
			return netlink.LinkSetDown(l)
		}, "is down"},
		{"host route", "host", func(hostName string) error {
			l, err := netlinksafe.LinkByName(hostName)
			if err != nil {
				return err
			}
			routes, err := netlinksafe.RouteList(l, netlink.FAMILY_V4)
			if err != nil || len(routes) == 0 {
				return fmt.Errorf("routes %v: %w", routes, err)
			}
			return netlink.RouteDel(&routes[0])
		}, "host route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, false)
			args := e.args("c1", "eth0")
			res := e.mustAdd(args)
			e.must(e.check(args, res))
			hostName := hostVethName("c1", "eth0")
			n := e.cont
			if tt.where == "host" {
				n = e.host
			}
			e.must(n.Do(func(ns.NetNS) error { return tt.brk(hostName) }))
			err := e.check(args, res)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CHECK after breaking the %s: error %v, want one about %q", tt.name, err, tt.want)
			}
		})
	}
	t.Run("endpoint released", func(t *testing.T) {
		e := newEnv(t, false)
		args := e.args("c1", "eth0")
		res := e.mustAdd(args)
		e.must(e.slimd.DelEndpoint(context.Background(), api.Attachment{ContainerID: "c1", IfName: "eth0"}))
		if err := e.check(args, res); err == nil || !strings.Contains(err.Error(), "slimd endpoint") {
			t.Fatalf("CHECK without the endpoint: error %v", err)
		}
	})
	t.Run("no prevResult", func(t *testing.T) {
		e := newEnv(t, false)
		args := e.args("c1", "eth0")
		e.mustAdd(args)
		err := e.inHost(func() error { return e.p.funcs(context.Background()).Check(args) })
		wantCode(t, err, types.ErrInvalidNetworkConfig)
	})
}

func TestGC(t *testing.T) {
	e := newEnv(t, true)
	// Three containers; keep2 attached as eth1, for variety.
	keep1, stale, keep2 := e.args("keep1", "eth0"), e.args("stale", "eth0"), e.args("keep2", "eth1")
	stale.Netns, keep2.Netns = newNS(t).Path(), newNS(t).Path()
	res1, res2 := e.mustAdd(keep1), e.mustAdd(keep2)
	e.mustAdd(stale)
	// An endpoint slimd holds with no veth at all (a crashed ADD).
	_, err := e.slimd.AddEndpoint(context.Background(), api.EndpointRequest{ContainerID: "orphan", IfName: "eth0", Netns: "/x"})
	e.must(err)

	// Links that look like ours but are not: GC must leave them.
	decoyBridge := hostVethName("decoy", "eth0")
	e.must(e.inHost(func() error {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: decoyBridge}}); err != nil {
			return err
		}
		// A veth pair of our naming scheme with both ends here: ours always
		// have the peer in a container.
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "slim00000000000"}, PeerName: "slim11111111111"})
	}))
	e.must(e.inCont(func() error {
		// A veth whose host end does not follow the scheme.
		hostNS := netlink.NsFd(int(e.host.Fd()))
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "other0"}, PeerName: "slimnotours", PeerNamespace: hostNS})
	}))

	valid := []api.Attachment{{ContainerID: "keep1", IfName: "eth0"}, {ContainerID: "keep2", IfName: "eth1"}}
	e.must(e.gc(valid...))

	wantHost := []string{decoyBridge, hostVethName("keep1", "eth0"), hostVethName("keep2", "eth1"),
		"lo", "slim00000000000", "slim11111111111", "slimnotours"}
	sort.Strings(wantHost)
	if got := linkNames(t, e.host); !slices.Equal(got, wantHost) {
		t.Errorf("host links after GC %v, want %v", got, wantHost)
	}
	got := e.slimd.attachments()
	slices.SortFunc(got, func(a, b api.Attachment) int { return strings.Compare(a.ContainerID, b.ContainerID) })
	if !slices.Equal(got, valid) {
		t.Errorf("slimd endpoints after GC %v, want %v", got, valid)
	}
	e.must(e.check(keep1, res1))
	e.must(e.check(keep2, res2))

	// GC with nothing valid removes the rest of ours, and only ours.
	e.must(e.gc())
	wantHost = []string{decoyBridge, "lo", "slim00000000000", "slim11111111111", "slimnotours"}
	sort.Strings(wantHost)
	if got := linkNames(t, e.host); !slices.Equal(got, wantHost) {
		t.Errorf("host links after second GC %v, want %v", got, wantHost)
	}
	if got := e.slimd.attachments(); len(got) != 0 {
		t.Errorf("slimd endpoints after second GC %v, want none", got)
	}
}

func TestStatus(t *testing.T) {
	slimd := newFakeSlimd(false)
	sock := serveSlimd(t, slimd)
	p := &plugin{log: slog.New(slog.NewTextHandler(testWriter{t}, nil)), stdout: liveStdout{}}
	status := func(data []byte) error {
		args := &skel.CmdArgs{StdinData: data}
		return testutils.CmdStatus(func() error { return p.funcs(context.Background()).Status(args) })
	}
	if err := status(conf(fmt.Sprintf(`"socket":%q`, sock))); err != nil {
		t.Fatalf("STATUS with slimd up: %v", err)
	}
	wantCode(t, status(conf(`"socket":"/nonexistent/slimd.sock"`)), types.ErrPluginNotAvailable)
	slimd.setSynced(false)
	wantCode(t, status(conf(fmt.Sprintf(`"socket":%q`, sock))), types.ErrPluginNotAvailable)
	wantCode(t, status(conf(`"socket":7`)), types.ErrDecodingFailure)
}
