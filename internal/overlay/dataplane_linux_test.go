package overlay

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// newTestDataplane returns a namespace with an underlay, the vxlan device
// and a netlink dataplane on it.
func newTestDataplane(t *testing.T) (*testNS, *Device, *netlinkDataplane) {
	t.Helper()
	tn := newTestNS(t)
	tn.addUnderlay(t, "ul0", "192.168.77.1/24", 1500)
	dev, err := tn.ensureDevice(t, baseDeviceConfig())
	if err != nil {
		t.Fatal(err)
	}
	return tn, dev, newDataplane(dev, tn.h)
}

// Remote peers for the dataplane tests (the local subnet is 10.244.1.0/24).
var (
	remoteB  = peer("b", "10.244.2.0/24", "192.168.77.2", "02:53:c0:a8:4d:02")
	remoteB6 = peer("b", "10.244.2.0/24", "192.168.77.2", "02:53:c0:a8:4d:02", "fd5a:11:0:2::/64")
	remoteC  = peer("c", "10.244.3.0/24", "192.168.77.3", "02:53:c0:a8:4d:03")
)

func checkPeers(t *testing.T, dp Dataplane, want ...Peer) {
	t.Helper()
	got, err := dp.Peers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || !samePeers(got, want) {
		t.Fatalf("Peers() =%s\nwant%s", peersString(got), peersString(want))
	}
	for _, p := range got {
		if p.Host != "" {
			t.Errorf("Peers() set Host %q", p.Host)
		}
	}
}

func TestDataplaneEnsurePeer(t *testing.T) {
	tn, dev, dp := newTestDataplane(t)
	ctx := t.Context()
	checkPeers(t, dp)

	must(t, dp.EnsurePeer(ctx, remoteB6))
	checkPeers(t, dp, remoteB6)

	// The kernel objects, as flannel makes them.
	objs := strings.Join(tn.objects(t, dev.Index), "\n")
	for _, want := range []string{
		"neigh fam=2 10.244.2.0 02:53:c0:a8:4d:02",
		"neigh fam=10 fd5a:11:0:2:: 02:53:c0:a8:4d:02",
		"neigh fam=7 192.168.77.2 02:53:c0:a8:4d:02",
		"route 10.244.2.0/24 via 10.244.2.0 proto 83",
		"route fd5a:11:0:2::/64 via fd5a:11:0:2:: proto 83",
	} {
		if !strings.Contains(objs, want) {
			t.Errorf("kernel lacks %q; has:\n%s", want, objs)
		}
	}
	routes, err := tn.routes(t, netlink.FAMILY_V4, dev.Index)
	must(t, err)
	for _, r := range routes {
		if r.Protocol == RouteProtocol && r.Flags&int(netlink.FLAG_ONLINK) == 0 {
			t.Errorf("route not onlink: %+v", r)
		}
	}
	fdb, err := dump(t.Context(), "fdb", func() ([]netlink.Neigh, error) { return tn.h.NeighList(dev.Index, unix.AF_BRIDGE) })
	must(t, err)
	for _, f := range fdb {
		if f.HardwareAddr.String() == "02:53:c0:a8:4d:02" && (f.Flags&netlink.NTF_SELF == 0 || f.State&netlink.NUD_PERMANENT == 0) {
			t.Errorf("fdb entry not self/permanent: %+v", f)
		}
	}

	before := tn.objects(t, dev.Index)
	must(t, dp.EnsurePeer(ctx, remoteB6)) // twice is harmless
	if after := tn.objects(t, dev.Index); !slices.Equal(before, after) {
		t.Errorf("second EnsurePeer changed the kernel:\n%v\n%v", before, after)
	}

	must(t, dp.EnsurePeer(ctx, remoteC))
	checkPeers(t, dp, remoteB6, remoteC)

	must(t, dp.RemovePeer(ctx, remoteB6))
	must(t, dp.RemovePeer(ctx, remoteB6)) // already gone is success
	checkPeers(t, dp, remoteC)
	must(t, dp.RemovePeer(ctx, remoteC))
	checkPeers(t, dp)
	if objs := tn.objects(t, dev.Index); slices.ContainsFunc(objs, func(s string) bool { return strings.Contains(s, "proto 83") || strings.HasPrefix(s, "neigh fam=2 ") }) {
		t.Errorf("objects left after RemovePeer:\n%s", strings.Join(objs, "\n"))
	}
}

func TestDataplaneRejects(t *testing.T) {
	_, _, dp := newTestDataplane(t)
	local := remoteB
	local.Subnet4 = pfx("10.244.1.0/24")
	bad := remoteB
	bad.VTEPMAC = nil
	for _, p := range []Peer{local, bad} {
		if err := dp.EnsurePeer(t.Context(), p); !errors.Is(err, ErrInvalidPeer) {
			t.Errorf("EnsurePeer(%v) = %v, want ErrInvalidPeer", p, err)
		}
	}
	checkPeers(t, dp)
}

func TestDataplaneOnlyOwnRoutes(t *testing.T) {
	tn, dev, dp := newTestDataplane(t)
	// A route on our device that somebody else made.
	foreign := &netlink.Route{LinkIndex: dev.Index, Dst: ipNet(pfx("10.50.0.0/16")), Protocol: unix.RTPROT_STATIC}
	must(t, tn.h.RouteAdd(foreign))
	checkPeers(t, dp)
	must(t, dp.RemovePeer(t.Context(), Peer{Subnet4: pfx("10.50.0.0/16")}))
	if !tn.hasRoute(t, dev.Index, pfx("10.50.0.0/16")) {
		t.Error("RemovePeer deleted a route it did not make")
	}
}

func TestDataplaneRepairsDrift(t *testing.T) {
	tests := []struct {
		name  string
		drift func(t *testing.T, tn *testNS, dev *Device)
	}{
		{"route deleted", func(t *testing.T, tn *testNS, dev *Device) {
			must(t, tn.h.RouteDel(&netlink.Route{LinkIndex: dev.Index, Dst: ipNet(remoteB6.Subnet4)}))
		}},
		{"ipv6 route deleted", func(t *testing.T, tn *testNS, dev *Device) {
			must(t, tn.h.RouteDel(&netlink.Route{LinkIndex: dev.Index, Dst: ipNet(remoteB6.Subnet6)}))
		}},
		{"fdb entry deleted", func(t *testing.T, tn *testNS, dev *Device) {
			must(t, tn.h.NeighDel(&netlink.Neigh{LinkIndex: dev.Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
				IP: net.IP(remoteB6.UnderlayIP.AsSlice()), HardwareAddr: remoteB6.VTEPMAC}))
		}},
		{"fdb entry points elsewhere", func(t *testing.T, tn *testNS, dev *Device) {
			must(t, tn.h.NeighSet(&netlink.Neigh{LinkIndex: dev.Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
				State: netlink.NUD_PERMANENT, IP: net.ParseIP("192.168.77.99"), HardwareAddr: remoteB6.VTEPMAC}))
		}},
		{"neighbour deleted", func(t *testing.T, tn *testNS, dev *Device) {
			must(t, tn.h.NeighDel(&netlink.Neigh{LinkIndex: dev.Index, Family: netlink.FAMILY_V4,
				IP: net.IP(remoteB6.gw4().AsSlice())}))
		}},
		{"route via another gateway", func(t *testing.T, tn *testNS, dev *Device) {
			must(t, tn.h.RouteReplace(&netlink.Route{LinkIndex: dev.Index, Dst: ipNet(remoteB6.Subnet4),
				Gw: net.ParseIP("10.244.9.9"), Flags: int(netlink.FLAG_ONLINK), Protocol: RouteProtocol}))
		}},
		{"everything deleted", func(t *testing.T, tn *testNS, dev *Device) {
			must(t, newDataplane(dev, tn.h).RemovePeer(t.Context(), remoteB6))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tn, dev, dp := newTestDataplane(t)
			must(t, dp.EnsurePeer(t.Context(), remoteB6))
			want := tn.objects(t, dev.Index)
			tt.drift(t, tn, dev)
			got, err := dp.Peers(t.Context())
			must(t, err)
			if samePeers(got, []Peer{remoteB6}) {
				t.Fatalf("Peers() does not see the drift:%s", peersString(got))
			}
			must(t, dp.EnsurePeer(t.Context(), remoteB6))
			// Leftovers of the drift (a neighbour of a foreign gateway) are
			// the reconciler's to remove; the peer itself is whole again.
			got, err = dp.Peers(t.Context())
			must(t, err)
			if !slices.ContainsFunc(got, func(p Peer) bool { return sameKernelState(p, remoteB6) }) {
				t.Fatalf("not repaired: Peers() =%s", peersString(got))
			}
			ensure, remove := Diff([]Peer{remoteB6}, got)
			for _, p := range remove {
				must(t, dp.RemovePeer(t.Context(), p))
			}
			for _, p := range ensure {
				must(t, dp.EnsurePeer(t.Context(), p))
			}
			checkPeers(t, dp, remoteB6)
			if after := tn.objects(t, dev.Index); !slices.Equal(want, after) {
				t.Errorf("kernel after repair:\n%s\nwant:\n%s", strings.Join(after, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestDataplaneUndo fails EnsurePeer at each step and checks that nothing
// leaked: the objects on the device are the same before and after.
func TestDataplaneUndo(t *testing.T) {
	tn, dev, dp := newTestDataplane(t)
	ctx := t.Context()
	must(t, dp.EnsurePeer(ctx, remoteC))
	for _, step := range []string{"neigh4", "neigh6", "fdb", "route4", "route6"} {
		t.Run("new peer fails at "+step, func(t *testing.T) {
			before := tn.objects(t, dev.Index)
			dp.failStep = step
			err := dp.EnsurePeer(ctx, remoteB6)
			dp.failStep = ""
			if !errors.Is(err, errInjected) {
				t.Fatalf("EnsurePeer = %v, want the injected error", err)
			}
			if after := tn.objects(t, dev.Index); !slices.Equal(before, after) {
				t.Errorf("leaked:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
			}
		})
	}
	t.Run("existing peer keeps its objects", func(t *testing.T) {
		changed := remoteC
		changed.UnderlayIP = addr("192.168.77.33")
		dp.failStep = "route4"
		err := dp.EnsurePeer(ctx, changed)
		dp.failStep = ""
		if !errors.Is(err, errInjected) {
			t.Fatalf("EnsurePeer = %v, want the injected error", err)
		}
		// Neighbour and FDB entry were replaced, not created: they stay,
		// and the route still points at the gateway.
		checkPeers(t, dp, changed)
	})
	t.Run("cancelled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := dp.EnsurePeer(cctx, remoteB6); !errors.Is(err, context.Canceled) {
			t.Fatalf("EnsurePeer = %v, want context.Canceled", err)
		}
	})
}

// TestDataplaneLeftovers: neighbour and FDB entries without a route (a peer
// half added before a crash) are reported, and RemovePeer clears them.
func TestDataplaneLeftovers(t *testing.T) {
	tn, _, dp := newTestDataplane(t)
	ctx := t.Context()
	must(t, tn.h.NeighSet(dp.neigh(remoteB.gw4(), remoteB.VTEPMAC)))
	must(t, tn.h.NeighSet(dp.fdb(remoteB.VTEPMAC, remoteB.UnderlayIP)))
	must(t, tn.h.NeighSet(dp.fdb(remoteC.VTEPMAC, remoteC.UnderlayIP)))
	got, err := dp.Peers(ctx)
	must(t, err)
	want := []Peer{
		{Subnet4: pfx("10.244.2.0/32"), VTEPMAC: remoteB.VTEPMAC, UnderlayIP: remoteB.UnderlayIP},
		{VTEPMAC: remoteC.VTEPMAC, UnderlayIP: remoteC.UnderlayIP},
	}
	if !samePeers(got, want) {
		t.Fatalf("Peers() =%s\nwant%s", peersString(got), peersString(want))
	}
	for _, p := range got {
		must(t, dp.RemovePeer(ctx, p))
	}
	checkPeers(t, dp)
}

// TestNewDataplane checks the exported constructor, which works in the
// calling thread's namespace (slimd's), here inside the test namespace.
func TestNewDataplane(t *testing.T) {
	tn, dev, _ := newTestDataplane(t)
	tn.do(t, func() error {
		dp := NewDataplane(dev)
		if err := dp.EnsurePeer(t.Context(), remoteB6); err != nil {
			return err
		}
		got, err := dp.Peers(t.Context())
		if err != nil {
			return err
		}
		if !samePeers(got, []Peer{remoteB6}) {
			t.Errorf("Peers() =%s", peersString(got))
		}
		return dp.RemovePeer(t.Context(), remoteB6)
	})
	checkPeers(t, newDataplane(dev, tn.h))
}

// A vxlan device deleted under a running dataplane is made again at the
// next pass (Peers), with a new index, and peers are programmed on it:
// before, every pass failed on the old index for good.
func TestDataplaneRecreatesDevice(t *testing.T) {
	tn, dev, dp := newTestDataplane(t)
	dp.ensure = func(cfg DeviceConfig) (*Device, error) { return tn.ensureDevice(t, cfg) }
	must(t, dp.EnsurePeer(t.Context(), remoteB))
	link, err := tn.h.LinkByIndex(dev.Index)
	must(t, err)
	must(t, tn.h.LinkDel(link))
	checkPeers(t, dp) // the device is back, empty
	if dp.link == dev.Index {
		if _, err := tn.h.LinkByIndex(dp.link); err != nil {
			t.Fatalf("dataplane still on the deleted index %d", dp.link)
		}
	}
	l, err := tn.h.LinkByName(dev.Name)
	if err != nil || l.Attrs().Index != dp.link || l.Type() != "vxlan" {
		t.Fatalf("device after the pass: %v (%v), dataplane index %d", l, err, dp.link)
	}
	must(t, dp.EnsurePeer(t.Context(), remoteB))
	checkPeers(t, dp, remoteB)
}
