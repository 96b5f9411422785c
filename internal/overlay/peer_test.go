package overlay

import (
	"errors"
	"net/netip"
	"testing"
)

func TestPeerValidate(t *testing.T) {
	good := peer("b", "10.244.2.0/24", "192.168.1.2", "02:53:c0:a8:01:02", "fd5a:11:0:2::/64")
	tests := []struct {
		name   string
		modify func(*Peer)
		ok     bool
	}{
		{"good", func(*Peer) {}, true},
		{"no ipv6", func(p *Peer) { p.Subnet6 = netip.Prefix{} }, true},
		{"ipv6 underlay", func(p *Peer) { p.UnderlayIP = addr("fd00::2") }, false},
		{"no underlay", func(p *Peer) { p.UnderlayIP = netip.Addr{} }, false},
		{"no mac", func(p *Peer) { p.VTEPMAC = nil }, false},
		{"multicast mac", func(p *Peer) { p.VTEPMAC = mac("01:00:5e:00:00:01") }, false},
		{"no subnet", func(p *Peer) { p.Subnet4 = netip.Prefix{} }, false},
		{"host route subnet", func(p *Peer) { p.Subnet4 = pfx("10.244.2.0/32") }, false},
		{"ipv6 subnet4", func(p *Peer) { p.Subnet4 = pfx("fd00::/64") }, false},
		{"ipv4 subnet6", func(p *Peer) { p.Subnet6 = pfx("10.0.0.0/8") }, false},
		{"host route subnet6", func(p *Peer) { p.Subnet6 = pfx("fd5a:11:0:2::/128") }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := good
			tt.modify(&p)
			err := p.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate(%v) = %v, want ok=%v", p, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidPeer) {
				t.Fatalf("error %v is not ErrInvalidPeer", err)
			}
		})
	}
}

func TestPeerString(t *testing.T) {
	p := peer("b", "10.244.2.0/24", "192.168.1.2", "02:53:c0:a8:01:02")
	want := "host=b subnet4=10.244.2.0/24 subnet6=- underlay=192.168.1.2 mac=02:53:c0:a8:01:02"
	if got := p.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := (Peer{}).String(), "subnet4=- subnet6=- underlay=- mac=-"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
