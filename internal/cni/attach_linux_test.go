package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/poll"
)

func TestAddCheckDel(t *testing.T) {
	for _, ipv6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", ipv6), func(t *testing.T) {
			testAddCheckDel(t, ipv6)
		})
	}
}

func testAddCheckDel(t *testing.T, ipv6 bool) {
	e := newEnv(t, ipv6)
	args := e.args("c0ffee01", "eth0")
	args.Args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0"
	args.StdinData = e.conf(`"args":{"cni":{"labels":{"app":"web"}}}`)
	hostName := hostVethName("c0ffee01", "eth0")

	res, out, err := e.add(args)
	e.must(err)

	// slimd got the endpoint, with the labels.
	ep, err := e.slimd.Endpoint(context.Background(), api.Attachment{ContainerID: "c0ffee01", IfName: "eth0"})
	e.must(err)
	wantLabels := map[string]string{"app": "web", LabelPodNamespace: "shop", LabelPodName: "web-0"}
	if fmt.Sprint(ep.Labels) != fmt.Sprint(wantLabels) {
		t.Errorf("endpoint labels %v, want %v", ep.Labels, wantLabels)
	}
	if ep.Netns != e.cont.Path() {
		t.Errorf("endpoint netns %q, want %q", ep.Netns, e.cont.Path())
	}

	s := e.readState("eth0", hostName)
	hostMAC, contMAC := s.hostLink.Attrs().HardwareAddr, s.contLink.Attrs().HardwareAddr

	// Links: a veth pair, both up, MTU from slimd.
	for _, l := range []netlink.Link{s.contLink, s.hostLink} {
		if _, ok := l.(*netlink.Veth); !ok {
			t.Errorf("%s is a %s, want veth", l.Attrs().Name, l.Type())
		}
		if l.Attrs().MTU != 1400 {
			t.Errorf("%s MTU %d, want 1400", l.Attrs().Name, l.Attrs().MTU)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s is down", l.Attrs().Name)
		}
	}
	if s.contLink.Attrs().ParentIndex != s.hostLink.Attrs().Index {
		t.Errorf("container end's peer is %d, want host veth %d", s.contLink.Attrs().ParentIndex, s.hostLink.Attrs().Index)
	}

	// Container: /32 (and /128 without DAD), routes via the gateway, and
	// permanent neighbours for it.
	addrs := map[string]netlink.Addr{}
	for _, a := range s.contAddrs {
		addrs[a.IPNet.String()] = a
	}
	if _, ok := addrs[ep.IPv4.String()+"/32"]; !ok {
		t.Errorf("container addresses %v lack %s/32", s.contAddrs, ep.IPv4)
	}
	if !hasRoute(s.contRoutes, "169.254.1.1/32", "", netlink.SCOPE_LINK) {
		t.Errorf("container routes %v lack 169.254.1.1/32 scope link", s.contRoutes)
	}
	if !hasRoute(s.contRoutes, "default", "169.254.1.1", anyScope) {
		t.Errorf("container routes %v lack default via 169.254.1.1", s.contRoutes)
	}
	if !hasPermanent(s.contNeighs, "169.254.1.1", hostMAC) {
		t.Errorf("container neighbours %v lack 169.254.1.1 lladdr %s permanent", s.contNeighs, hostMAC)
	}
	// Host: route and permanent neighbour to the container.
	if !hasRoute(s.hostRoutes, ep.IPv4.String()+"/32", "", netlink.SCOPE_LINK) {
		t.Errorf("host routes %v lack %s/32 scope link", s.hostRoutes, ep.IPv4)
	}
	if !hasPermanent(s.hostNeighs, ep.IPv4.String(), contMAC) {
		t.Errorf("host neighbours %v lack %s lladdr %s", s.hostNeighs, ep.IPv4, contMAC)
	}
	if ipv6 {
		a, ok := addrs[ep.IPv6.String()+"/128"]
		if !ok {
			t.Errorf("container addresses %v lack %s/128", s.contAddrs, ep.IPv6)
		} else if a.Flags&unix.IFA_F_NODAD == 0 {
			t.Errorf("%s has flags %#x, want IFA_F_NODAD", a.IPNet, a.Flags)
		}
		if !hasRoute(s.contRoutes, "default", "fe80::1", anyScope) {
			t.Errorf("container routes %v lack default via fe80::1", s.contRoutes)
		}
		if !hasPermanent(s.contNeighs, "fe80::1", hostMAC) {
			t.Errorf("container neighbours %v lack fe80::1 lladdr %s permanent", s.contNeighs, hostMAC)
		}
		if !hasRoute(s.hostRoutes, ep.IPv6.String()+"/128", "", anyScope) {
			t.Errorf("host routes %v lack %s/128", s.hostRoutes, ep.IPv6)
		}
		if !hasPermanent(s.hostNeighs, ep.IPv6.String(), contMAC) {
			t.Errorf("host neighbours %v lack %s lladdr %s", s.hostNeighs, ep.IPv6, contMAC)
		}
	}

	// The result, as JSON on stdout.
	var raw map[string]any
	e.must(json.Unmarshal(out, &raw))
	if raw["cniVersion"] != "1.1.0" {
		t.Errorf("result cniVersion %v", raw["cniVersion"])
	}
	wantIfs := []*current.Interface{
		{Name: hostName, Mac: hostMAC.String(), Mtu: 1400},
		{Name: "eth0", Mac: contMAC.String(), Mtu: 1400, Sandbox: e.cont.Path()},
	}
	if fmt.Sprint(res.Interfaces) != fmt.Sprint(wantIfs) {
		t.Errorf("result interfaces %v, want %v", res.Interfaces, wantIfs)
	}
	wantIPs := []string{fmt.Sprintf("{Interface:1 Address:%s/32 Gateway:169.254.1.1}", ep.IPv4)}
	wantRoutes := []string{"169.254.1.1/32 scope 253", "0.0.0.0/0 via 169.254.1.1"}
	if ipv6 {
		wantIPs = append(wantIPs, fmt.Sprintf("{Interface:1 Address:%s/128 Gateway:fe80::1}", ep.IPv6))
		wantRoutes = append(wantRoutes, "::/0 via fe80::1")
	}
	var gotIPs, gotRoutes []string
	for _, ipc := range res.IPs {
		gotIPs = append(gotIPs, fmt.Sprintf("{Interface:%d Address:%s Gateway:%s}", *ipc.Interface, ipc.Address.String(), ipc.Gateway))
	}
	for _, r := range res.Routes {
		s := r.Dst.String()
		if r.GW != nil {
			s += " via " + r.GW.String()
		}
		if r.Scope != nil {
			s += fmt.Sprintf(" scope %d", *r.Scope)
		}
		gotRoutes = append(gotRoutes, s)
	}
	if !slices.Equal(gotIPs, wantIPs) {
		t.Errorf("result IPs %v, want %v", gotIPs, wantIPs)
	}
	if !slices.Equal(gotRoutes, wantRoutes) {
		t.Errorf("result routes %v, want %v", gotRoutes, wantRoutes)
	}

	// Packets flow, with the endpoint's address as source.
	if got := e.connect(netip.MustParseAddr("192.0.2.1")); got != ep.IPv4 {
		t.Errorf("host saw client %v, want %v", got, ep.IPv4)
	}
	if ipv6 {
		if got := e.connect(netip.MustParseAddr("fd00:ffff::1")); got != ep.IPv6 {
			t.Errorf("host saw client %v, want %v", got, ep.IPv6)
		}
	}

	e.must(e.check(args, res))

	e.must(e.del(args))
	e.assertClean()
	// DEL is idempotent.
	e.must(e.del(args))
	e.assertClean()
}

func TestAddVersion100(t *testing.T) {
	e := newEnv(t, false)
	args := e.args("c1", "eth0")
	args.StdinData = []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"slim","type":"slim-cni","socket":%q}`, e.sock))
	_, out, err := e.add(args)
	e.must(err)
	var raw struct {
		CNIVersion string `json:"cniVersion"`
	}
	e.must(json.Unmarshal(out, &raw))
	if raw.CNIVersion != "1.0.0" {
		t.Errorf("result cniVersion %q, want the config's 1.0.0", raw.CNIVersion)
	}
	e.must(e.del(args))
	e.assertClean()
}

func TestDelNetnsGone(t *testing.T) {
	e := newEnv(t, true)
	args := e.args("c1", "eth0")
	e.mustAdd(args)
	removeNS(t, e.cont)
	if _, err := os.Stat(args.Netns); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("netns path still there: %v", err)
	}
	e.must(e.del(args))
	e.must(e.del(args))
	// The kernel destroys the namespace, and the veth with it, in the
	// background; DEL may have raced it, but must not leave it.
	poll.Until(t, 5*time.Second, func() error {
		var names []string
		err := e.host.Do(func(ns.NetNS) error {
			links, err := netlinksafe.LinkList()
			for _, l := range links {
				names = append(names, l.Attrs().Name)
			}
			return err
		})
		if err == nil && !slices.Equal(names, []string{"lo"}) {
			err = fmt.Errorf("host links %v", names)
		}
		return err
	})
	if got := e.slimd.attachments(); len(got) != 0 {
		t.Errorf("slimd still holds %v", got)
	}
}

func TestDelEmptyNetns(t *testing.T) {
	e := newEnv(t, false)
	args := e.args("c1", "eth0")
	e.mustAdd(args)
	a := *args
	a.Netns = "" // allowed for DEL
	e.must(e.del(&a))
	e.assertClean()
}

func TestDelSlimdDown(t *testing.T) {
	e := newEnv(t, false)
	args := e.args("c1", "eth0")
	e.mustAdd(args)
	down := *args
	down.StdinData = conf(`"socket":"/nonexistent/slimd.sock"`)
	err := e.del(&down)
	wantCode(t, err, types.ErrTryAgainLater)
	// The veth went anyway; the runtime's retry releases the address.
	if got := linkNames(t, e.host); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("host links %v after DEL with slimd down, want only lo", got)
	}
	if got := e.slimd.attachments(); len(got) != 1 {
		t.Errorf("slimd holds %v, want the endpoint still", got)
	}
	e.must(e.del(args))
	e.assertClean()
}

func TestAddBadConfig(t *testing.T) {
	e := newEnv(t, false)
	tests := []struct {
		name string
		data []byte
		code uint
	}{
		{"not json", []byte(`{"cniVersion":"1.1.0","name":`), types.ErrDecodingFailure},
		{"wrong field type", e.conf(`"args":{"cni":{"labels":7}}`), types.ErrDecodingFailure},
		{"unknown field", e.conf(`"bridge":"cni0"`), types.ErrUnsupportedField},
		{"unknown type", []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"slim","type":"bridge","socket":%q}`, e.sock)), types.ErrInvalidNetworkConfig},
		{"ipam", e.conf(`"ipam":{"type":"host-local"}`), types.ErrUnsupportedField},
		{"bad label", e.conf(`"args":{"cni":{"labels":{"a b":"c"}}}`), types.ErrInvalidNetworkConfig},
		{"prevResult on ADD", e.conf(`"prevResult":{"cniVersion":"1.1.0"}`), types.ErrInvalidNetworkConfig},
		{"old version", []byte(fmt.Sprintf(`{"cniVersion":"0.3.1","name":"slim","type":"slim-cni","socket":%q}`, e.sock)), types.ErrIncompatibleCNIVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := e.args("c1", "eth0")
			args.StdinData = tt.data
			_, _, err := e.add(args)
			wantCode(t, err, tt.code)
			e.assertClean()
		})
	}
	for _, tc := range []struct {
		name   string
		change func(*skel.CmdArgs)
		code   uint
	}{
		{"bad CNI_ARGS", func(a *skel.CmdArgs) { a.Args = "K8S_POD_NAME=x;SURPRISE=1" }, types.ErrInvalidEnvironmentVariables},
		{"bad netns", func(a *skel.CmdArgs) { a.Netns = "/nonexistent/netns" }, types.ErrInvalidNetNS},
		{"host netns", func(a *skel.CmdArgs) { a.Netns = e.host.Path() }, types.ErrInvalidNetNS},
		{"slimd down", func(a *skel.CmdArgs) { a.StdinData = conf(`"socket":"/nonexistent/slimd.sock"`) }, types.ErrTryAgainLater},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := e.args("c1", "eth0")
			tc.change(args)
			_, _, err := e.add(args)
			wantCode(t, err, tc.code)
			e.assertClean()
		})
	}
}

// TestAddRollback fails ADD before each of its steps in turn and checks that
// it leaves both namespaces and slimd as they were.
func TestAddRollback(t *testing.T) {
	for _, ipv6 := range []bool{false, true} {
		for s := stepStatus; s <= numSteps; s++ {
			t.Run(fmt.Sprintf("ipv6=%v/step%d", ipv6, s), func(t *testing.T) {
				e := newEnv(t, ipv6)
				unchanged := e.unchanged(t)
				e.p.failAt = s
				args := e.args("c1", "eth0")
				_, _, err := e.add(args)
				if err == nil || !strings.Contains(err.Error(), errFault.Error()) {
					t.Fatalf("ADD failing at step %d: error %v, want the injected fault", s, err)
				}
				unchanged()
				if got := e.slimd.attachments(); len(got) != 0 {
					t.Errorf("slimd still holds %v", got)
				}
				// Nothing left blocks the next try.
				e.p.failAt = 0
				e.must(e.check(args, e.mustAdd(args)))
			})
		}
	}
}

// unchanged snapshots both namespaces and returns a check that they are
// still the same.
func (e *testEnv) unchanged(t *testing.T) func() {
	t.Helper()
	host, cont := snapshot(t, e.host), snapshot(t, e.cont)
	return func() {
		t.Helper()
		if got := snapshot(t, e.host); got != host {
			t.Errorf("host namespace changed:\n%s\nwant\n%s", got, host)
		}
		if got := snapshot(t, e.cont); got != cont {
			t.Errorf("container namespace changed:\n%s\nwant\n%s", got, cont)
		}
	}
}

func TestAddIfNameExists(t *testing.T) {
	e := newEnv(t, false)
	e.must(e.inCont(func() error {
		// A bridge: any kind but veth will do (this kernel has no dummy).
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}})
	}))
	unchanged := e.unchanged(t)
	args := e.args("c1", "eth0")
	_, _, err := e.add(args)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("ADD over an existing eth0: error %v", err)
	}
	unchanged()
	if got := e.slimd.attachments(); len(got) != 0 {
		t.Errorf("slimd still holds %v", got)
	}
	// The runtime follows a failed ADD with DEL, which must leave the
	// bridge alone: slim-cni did not create it.
	e.must(e.del(args))
	if got := linkNames(t, e.cont); !slices.Equal(got, []string{"eth0", "lo"}) {
		t.Errorf("container links %v after DEL, want the bridge eth0 kept", got)
	}
}

// TestAddTwice: a repeated ADD fails, and its rollback must not take the
// live attachment or its address with it.
func TestAddTwice(t *testing.T) {
	e := newEnv(t, false)
	args := e.args("c1", "eth0")
	res := e.mustAdd(args)
	before := snapshot(t, e.host)
	if _, _, err := e.add(args); err == nil {
		t.Fatal("second ADD succeeded")
	}
	if got := snapshot(t, e.host); got != before {
		t.Errorf("host namespace changed:\n%s\nwant\n%s", got, before)
	}
	e.must(e.check(args, res))
	e.must(e.del(args))
	e.assertClean()
}
