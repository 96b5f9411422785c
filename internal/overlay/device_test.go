package overlay

import (
	"net/netip"
	"testing"
)

func TestDeriveMAC(t *testing.T) {
	m := deriveMAC(addr("192.168.77.1"))
	if got, want := m.String(), "02:53:c0:a8:4d:01"; got != want {
		t.Fatalf("deriveMAC = %s, want %s", got, want)
	}
	if m[0]&0x02 == 0 || m[0]&0x01 != 0 {
		t.Fatalf("%s is not a locally administered unicast MAC", m)
	}
	if deriveMAC(addr("::ffff:192.168.77.1")).String() != m.String() {
		t.Fatal("mapped address gives another MAC")
	}
}

func TestDeviceConfigDefaults(t *testing.T) {
	c, err := DeviceConfig{UnderlayIP: addr("192.168.77.1"), Subnet4: pfx("10.244.1.9/24"),
		Subnet6: pfx("fd5a:11:0:1::9/64")}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "slim-vxlan" || c.VNI != 1 || c.Port != 4789 {
		t.Errorf("defaults: name %q vni %d port %d", c.Name, c.VNI, c.Port)
	}
	if c.Subnet4 != pfx("10.244.1.0/24") || c.Subnet6 != pfx("fd5a:11:0:1::/64") {
		t.Errorf("subnets not masked: %v %v", c.Subnet4, c.Subnet6)
	}

	bad := []DeviceConfig{
		{Subnet4: pfx("10.244.1.0/24")}, // no underlay
		{UnderlayIP: addr("fd00::1"), Subnet4: pfx("10.244.1.0/24")},
		{UnderlayIP: addr("192.168.77.1")}, // no subnet
		{UnderlayIP: addr("192.168.77.1"), Subnet4: pfx("fd00::/64")},
		{UnderlayIP: addr("192.168.77.1"), Subnet4: pfx("10.244.1.0/24"), Subnet6: pfx("10.0.0.0/8")},
		{UnderlayIP: addr("192.168.77.1"), Subnet4: pfx("10.244.1.0/24"), VNI: 1 << 24},
		{UnderlayIP: addr("192.168.77.1"), Subnet4: pfx("10.244.1.0/24"), Port: 70000},
		{UnderlayIP: addr("192.168.77.1"), Subnet4: pfx("10.244.1.0/24"), Name: "a-name-far-too-long"},
		{UnderlayIP: addr("192.168.77.1"), Subnet4: pfx("10.244.1.0/24"), MAC: mac("01:00:5e:00:00:01")},
	}
	for i, c := range bad {
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("bad config %d accepted: %+v", i, c)
		}
	}
}

func TestDevicePeer(t *testing.T) {
	d := &Device{MAC: mac("02:53:c0:a8:4d:01"), UnderlayIP: addr("192.168.77.1"),
		Subnet4: pfx("10.244.1.0/24"), Subnet6: netip.Prefix{}}
	p := d.Peer("h1")
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.Host != "h1" || p.Subnet4 != d.Subnet4 {
		t.Errorf("Peer() = %v", p)
	}
}
