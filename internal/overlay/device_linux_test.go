package overlay

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func baseDeviceConfig() DeviceConfig {
	return DeviceConfig{
		UnderlayIP: addr("192.168.77.1"),
		Subnet4:    pfx("10.244.1.0/24"),
		Subnet6:    pfx("fd5a:11:0:1::/64"),
	}
}

// checkDevice reads the device back from the kernel and checks it against
// cfg (with defaults) and the underlay link.
func checkDevice(t *testing.T, tn *testNS, dev *Device, cfg DeviceConfig, underlay netlink.Link, mtu int) {
	t.Helper()
	l, err := tn.h.LinkByName(dev.Name)
	if err != nil {
		t.Fatal(err)
	}
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		t.Fatalf("%s is a %s, not vxlan", dev.Name, l.Type())
	}
	if vx.VxlanId != cfg.VNI || vx.Port != cfg.Port || vx.Learning ||
		!vx.SrcAddr.Equal(net.IP(cfg.UnderlayIP.AsSlice())) || vx.VtepDevIndex != underlay.Attrs().Index {
		t.Errorf("vxlan attributes: vni %d port %d learning %v local %s link %d; want vni %d port %d learning off local %s link %d",
			vx.VxlanId, vx.Port, vx.Learning, vx.SrcAddr, vx.VtepDevIndex,
			cfg.VNI, cfg.Port, cfg.UnderlayIP, underlay.Attrs().Index)
	}
	if vx.MTU != mtu || dev.MTU != mtu {
		t.Errorf("MTU %d (Device says %d), want %d", vx.MTU, dev.MTU, mtu)
	}
	if vx.Flags&net.FlagUp == 0 {
		t.Error("device is not up")
	}
	if vx.Index != dev.Index || vx.HardwareAddr.String() != dev.MAC.String() {
		t.Errorf("Device %+v does not match the kernel's index %d MAC %s", dev, vx.Index, vx.HardwareAddr)
	}

	want := []string{netip.PrefixFrom(cfg.Subnet4.Addr(), 32).String()}
	if cfg.Subnet6.IsValid() {
		want = append(want, netip.PrefixFrom(cfg.Subnet6.Addr(), 128).String())
	}
	addrs, err := dump(t.Context(), "addresses", func() ([]netlink.Addr, error) { return tn.h.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		if !ok || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		got = append(got, p.String())
		if p.Addr().Is6() && a.Flags&unix.IFA_F_NODAD == 0 {
			t.Errorf("%s without nodad", p)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("addresses %v, want %v", got, want)
	}

	tn.do(t, func() error {
		on, err := txChecksum(dev.Name)
		if err != nil {
			return err
		}
		if on {
			t.Error("tx checksum offload is still on")
		}
		return nil
	})
	if v := tn.readSysctl(t, sysctlIPv4Forward); strings.TrimSpace(v) != "1" {
		t.Errorf("ip_forward = %q", v)
	}
	if cfg.Subnet6.IsValid() {
		if v := tn.readSysctl(t, sysctlIPv6Forward); strings.TrimSpace(v) != "1" {
			t.Errorf("ipv6 forwarding = %q", v)
		}
	}
}

func TestEnsureDevice(t *testing.T) {
	tn := newTestNS(t)
	underlay := tn.addUnderlay(t, "ul0", "192.168.77.1/24", 1600)
	cfg := baseDeviceConfig()
	dev, err := tn.ensureDevice(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	full, _ := cfg.withDefaults()
	checkDevice(t, tn, dev, full, underlay, 1600-50)
	if dev.Name != "slim-vxlan" || dev.MAC.String() != "02:53:c0:a8:4d:01" {
		t.Errorf("name %q MAC %s, want slim-vxlan with the derived MAC", dev.Name, dev.MAC)
	}
	if dev.VNI != 1 || dev.Port != 4789 || dev.UnderlayIndex != underlay.Attrs().Index ||
		dev.Subnet4 != cfg.Subnet4 || dev.Subnet6 != cfg.Subnet6 {
		t.Errorf("Device = %+v", dev)
	}

	t.Run("twice keeps the device", func(t *testing.T) {
		checkDevice(t, tn, tn.ensureSame(t, cfg, dev), full, underlay, 1550)
	})

	t.Run("drift is corrected in place", func(t *testing.T) {
		l, _ := tn.h.LinkByIndex(dev.Index)
		must(t, tn.h.LinkSetMTU(l, 1400))
		must(t, tn.h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(pfx("10.9.9.9/24"))}))
		must(t, tn.h.LinkSetDown(l))
		tn.do(t, func() error {
			if err := setTxChecksum(dev.Name, true); err != nil {
				return err
			}
			if on, err := txChecksum(dev.Name); err != nil || !on {
				t.Errorf("tx checksum after turning it on: %v, %v", on, err)
			}
			return nil
		})
		checkDevice(t, tn, tn.ensureSame(t, cfg, dev), full, underlay, 1550)
	})

	t.Run("nil MAC keeps the existing one, a set MAC is applied in place", func(t *testing.T) {
		l, _ := tn.h.LinkByIndex(dev.Index)
		must(t, tn.h.LinkSetHardwareAddr(l, mac("02:00:00:00:00:01")))
		again, err := tn.ensureDevice(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if again.MAC.String() != "02:00:00:00:00:01" || again.Index != dev.Index {
			t.Errorf("MAC %s index %d, want the kept MAC on index %d", again.MAC, again.Index, dev.Index)
		}
		withMAC := cfg
		withMAC.MAC = mac("02:53:00:00:00:aa")
		again, err = tn.ensureDevice(t, withMAC)
		if err != nil {
			t.Fatal(err)
		}
		if again.MAC.String() != "02:53:00:00:00:aa" || again.Index != dev.Index {
			t.Errorf("MAC %s index %d, want 02:53:00:00:00:aa on index %d", again.MAC, again.Index, dev.Index)
		}
	})

	t.Run("dropping IPv6 removes its address", func(t *testing.T) {
		v4only := cfg
		v4only.Subnet6 = netip.Prefix{}
		again, err := tn.ensureDevice(t, v4only)
		if err != nil {
			t.Fatal(err)
		}
		full, _ := v4only.withDefaults()
		checkDevice(t, tn, again, full, underlay, 1550)
	})
}

func TestEnsureDeviceReplacesMismatch(t *testing.T) {
	tn := newTestNS(t)
	underlay := tn.addUnderlay(t, "ul0", "192.168.77.1/24", 1500)
	tn.addUnderlay(t, "ul1", "192.168.78.1/24", 1500)
	cfg := baseDeviceConfig()
	dev, err := tn.ensureDevice(t, cfg)
	if err != nil {
		t.Fatal(err)
	}

	replaced := func(t *testing.T, cfg DeviceConfig, underlay netlink.Link) {
		t.Helper()
		again, err := tn.ensureDevice(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if again.Index == dev.Index {
			t.Fatal("mismatching device kept")
		}
		full, _ := cfg.withDefaults()
		checkDevice(t, tn, again, full, underlay, 1450)
		dev = again
	}

	t.Run("VNI", func(t *testing.T) {
		c := cfg
		c.VNI = 2
		replaced(t, c, underlay)
	})
	t.Run("port", func(t *testing.T) {
		c := cfg
		c.Port = 8472
		replaced(t, c, underlay)
	})
	t.Run("underlay", func(t *testing.T) {
		c := cfg
		c.UnderlayIP = addr("192.168.78.1")
		ul1, _ := tn.h.LinkByName("ul1")
		replaced(t, c, ul1)
	})
	t.Run("learning on", func(t *testing.T) {
		must(t, tn.h.LinkDel(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Index: dev.Index}}))
		vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "slim-vxlan"}, VxlanId: 1, Port: 4789,
			VtepDevIndex: underlay.Attrs().Index, SrcAddr: net.ParseIP("192.168.77.1"), Learning: true}
		must(t, tn.h.LinkAdd(vx))
		l, _ := tn.h.LinkByName("slim-vxlan")
		if !l.(*netlink.Vxlan).Learning {
			t.Fatal("could not make a device with learning on")
		}
		dev.Index = l.Attrs().Index
		replaced(t, cfg, underlay)
	})
	t.Run("not a vxlan", func(t *testing.T) {
		must(t, tn.h.LinkDel(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Index: dev.Index}}))
		tn.addUnderlay(t, "slim-vxlan", "", 1500) // a veth by our device's name
		l, _ := tn.h.LinkByName("slim-vxlan")
		dev.Index = l.Attrs().Index
		replaced(t, cfg, underlay)
	})
}

func TestEnsureDeviceUnderlay(t *testing.T) {
	tn := newTestNS(t)
	tn.addUnderlay(t, "ul0", "192.168.77.1/24", 1500)
	ul1 := tn.addUnderlay(t, "ul1", "192.168.78.1/24", 9000)

	cfg := baseDeviceConfig()
	cfg.UnderlayIface = "ul1" // the address need not be on it
	cfg.Name = "slim-vx-test"
	cfg.MTU = 1300
	dev, err := tn.ensureDevice(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	full, _ := cfg.withDefaults()
	checkDevice(t, tn, dev, full, ul1, 1300)

	cfg = baseDeviceConfig()
	cfg.UnderlayIP = addr("192.168.99.1")
	if _, err := tn.ensureDevice(t, cfg); err == nil || !strings.Contains(err.Error(), "no link holds") {
		t.Errorf("EnsureDevice without an underlay link = %v", err)
	}
	cfg.UnderlayIface = "nope0"
	if _, err := tn.ensureDevice(t, cfg); err == nil {
		t.Error("EnsureDevice with a missing underlay link succeeded")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ensureSame ensures the device of cfg and fails unless it is dev, kept in
// place (same index).
func (tn *testNS) ensureSame(t *testing.T, cfg DeviceConfig, dev *Device) *Device {
	t.Helper()
	again, err := tn.ensureDevice(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if again.Index != dev.Index {
		t.Fatalf("device recreated: index %d -> %d", dev.Index, again.Index)
	}
	return again
}
