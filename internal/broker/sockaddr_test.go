package broker

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func sa4(ip string, port uint16) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint16(b, afInet)
	binary.BigEndian.PutUint16(b[2:], port)
	a := netip.MustParseAddr(ip).As4()
	copy(b[4:], a[:])
	return b
}

func sa6(ip string, port uint16, scope uint32) []byte {
	b := make([]byte, 28)
	binary.LittleEndian.PutUint16(b, afInet6)
	binary.BigEndian.PutUint16(b[2:], port)
	a := netip.MustParseAddr(ip).As16()
	copy(b[8:], a[:])
	binary.LittleEndian.PutUint32(b[24:], scope)
	return b
}

func TestParseSockaddr(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"v4", sa4("10.244.1.5", 80), "10.244.1.5:80"},
		{"v6", sa6("fd5a:11::5", 443, 0), "[fd5a:11::5]:443"},
		{"v4 mapped", sa6("::ffff:10.244.1.5", 80, 0), "10.244.1.5:80"},
		{"v6 scoped global", sa6("fd5a:11::5", 443, 3), "[fd5a:11::5]:443"},
		{"link-local scoped", sa6("fe80::1", 22, 2), ""},
		{"short v4", sa4("10.0.0.1", 1)[:8], ""},
		{"short v6", sa6("::1", 1, 0)[:20], ""},
		{"unspec", []byte{0, 0, 0, 0}, ""},
		{"unix", []byte{1, 0, '/', 't'}, ""},
		{"empty", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSockaddr(tc.b)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("parsed %v, want error", got)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func FuzzParseSockaddr(f *testing.F) {
	f.Add(sa4("10.0.0.1", 80))
	f.Add(sa6("fd00::1", 80, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		ap, err := parseSockaddr(b)
		if err == nil && !ap.Addr().IsValid() {
			t.Fatalf("valid parse of %x gave invalid address", b)
		}
	})
}
