package overlay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/slimnet/slim/internal/testenv"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNSPrefix names every namespace these tests create, so that a sweeper
// can find leftovers (ip netns list | grep slimtest-ovl-).
const testNSPrefix = "slimtest-ovl-"

// testNS is a fresh named network namespace with a netlink handle on it.
type testNS struct {
	name string
	ns   ns.NetNS
	h    *netlink.Handle
}

// newTestNS creates a namespace that t.Cleanup removes, even on failure.
// Loopback is up; nothing else exists in it.
func newTestNS(t *testing.T) *testNS {
	t.Helper()
	testenv.RequireRoot(t)
	name := fmt.Sprintf("%s%08x", testNSPrefix, rand.Uint32())
	if err := createNamedNS(name); err != nil {
		_ = os.Remove(filepath.Join("/run/netns", name))
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	n, err := ns.GetNS(filepath.Join("/run/netns", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	h, err := netlink.NewHandleAt(netns.NsHandle(n.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	tn := &testNS{name: name, ns: n, h: h}
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return tn
}

// createNamedNS creates a named netns without moving any thread but a
// locked, throwaway one: netns.NewNamed switches the calling thread.
func createNamedNS(name string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		created, err := netns.NewNamed(name)
		if err == nil {
			_ = created.Close()
		}
		if serr := netns.Set(orig); serr != nil {
			// The thread stays locked and dies with this goroutine.
			errc <- errors.Join(err, fmt.Errorf("restore netns: %w", serr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// do runs fn on a thread inside the namespace (for code that works in the
// calling thread's netns: EnsureDevice, ethtool, sysctls, sockets).
func (tn *testNS) do(t *testing.T, fn func() error) {
	t.Helper()
	if err := tn.ns.Do(func(ns.NetNS) error { return fn() }); err != nil {
		t.Fatal(err)
	}
}

// addUnderlay adds an up link with address cidr, an underlay stand-in: a
// veth pair whose other end (name+"p") stays in the namespace too (this
// kernel has no dummy links).
func (tn *testNS) addUnderlay(t *testing.T, name, cidr string, mtu int) netlink.Link {
	t.Helper()
	l := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, PeerName: name + "p"}
	if err := tn.h.LinkAdd(l); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	tn.setUp(t, name+"p", "")
	return tn.setUp(t, name, cidr)
}

// setUp gives link name address cidr and brings it up.
func (tn *testNS) setUp(t *testing.T, name, cidr string) netlink.Link {
	t.Helper()
	l, err := tn.h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if cidr != "" {
		if err := tn.h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(cidr))}); err != nil {
			t.Fatalf("add %s to %s: %v", cidr, name, err)
		}
	}
	if err := tn.h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	return l
}

// ensureDevice runs EnsureDevice inside the namespace.
func (tn *testNS) ensureDevice(t *testing.T, cfg DeviceConfig) (*Device, error) {
	t.Helper()
	var dev *Device
	var err error
	tn.do(t, func() error {
		dev, err = EnsureDevice(cfg)
		return nil
	})
	return dev, err
}

// readSysctl reads a sysctl inside the namespace.
func (tn *testNS) readSysctl(t *testing.T, path string) string {
	t.Helper()
	var b []byte
	tn.do(t, func() error {
		var err error
		b, err = os.ReadFile(path)
		return err
	})
	return string(b)
}

// objects lists the kernel objects on link that the overlay could own, one
// line each, for before/after comparisons.
func (tn *testNS) objects(t *testing.T, link int) []string {
	t.Helper()
	var out []string
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6, unix.AF_BRIDGE} {
		ns, err := dump(t.Context(), "neighbours", func() ([]netlink.Neigh, error) { return tn.h.NeighList(link, fam) })
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if n.State&netlink.NUD_PERMANENT != 0 {
				out = append(out, fmt.Sprintf("neigh fam=%d %s %s", fam, n.IP, n.HardwareAddr))
			}
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := tn.routes(t, fam, link)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			out = append(out, fmt.Sprintf("route %s via %s proto %d", r.Dst, r.Gw, r.Protocol))
		}
	}
	return out
}

// routes lists the routes of family fam through link (main table).
func (tn *testNS) routes(t *testing.T, fam, link int) ([]netlink.Route, error) {
	return dump(t.Context(), "routes", func() ([]netlink.Route, error) {
		return tn.h.RouteListFiltered(fam, &netlink.Route{LinkIndex: link}, netlink.RT_FILTER_OIF)
	})
}

// hasRoute reports whether link holds a route to dst.
func (tn *testNS) hasRoute(t *testing.T, link int, dst netip.Prefix) bool {
	t.Helper()
	fam := netlink.FAMILY_V4
	if dst.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	rs, err := tn.routes(t, fam, link)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if p, ok := prefixOf(r.Dst); ok && p == dst {
			return true
		}
	}
	return false
}
