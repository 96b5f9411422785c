package policy

import (
	"net/netip"
	"slices"
	"testing"
)

// allows evaluates the filter as a packet filter would, for a connection
// from src to dst (a reference for the tests).
func (f Filter) allows(src, dst netip.Addr, port uint16, proto Protocol) bool {
	ok := func(allows []Allow, local, peer netip.Addr) bool {
		for _, a := range allows {
			if a.Local == local && a.Peer.Contains(peer) && (a.Proto == "" || a.Proto == proto && a.First <= port && port <= a.Last) {
				return true
			}
		}
		return false
	}
	if slices.Contains(f.IsolatedEgress, src) && !ok(f.Egress, src, dst) {
		return false
	}
	if slices.Contains(f.IsolatedIngress, dst) && !ok(f.Ingress, dst, src) {
		return false
	}
	return true
}

func TestSubtract(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		cidr   string
		except []string
		want   []string
	}{
		{"10.0.0.0/8", nil, []string{"10.0.0.0/8"}},
		{"10.0.0.0/8", []string{"10.0.0.0/8"}, nil},
		{"10.0.0.0/24", []string{"10.0.0.0/8"}, nil},
		{"10.0.0.0/30", []string{"10.0.0.1/32"}, []string{"10.0.0.0/32", "10.0.0.2/31"}},
		{"10.0.0.0/24", []string{"10.0.0.128/25", "10.0.0.0/26"}, []string{"10.0.0.64/26"}},
		{"10.0.0.0/24", []string{"192.168.0.0/16"}, []string{"10.0.0.0/24"}},
		{"fd00::/126", []string{"fd00::3/128"}, []string{"fd00::/127", "fd00::2/128"}},
	} {
		var ex []netip.Prefix
		for _, e := range tc.except {
			ex = append(ex, p(e))
		}
		var got []string
		for _, r := range subtract(p(tc.cidr), ex) {
			got = append(got, r.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s except %v = %v, want %v", tc.cidr, tc.except, got, tc.want)
		}
	}
	// 0.0.0.0/0 except one address: 32 prefixes, none holding it.
	rs := subtract(p("0.0.0.0/0"), []netip.Prefix{p("10.1.2.3/32")})
	if len(rs) != 32 || slices.ContainsFunc(rs, func(r netip.Prefix) bool { return r.Contains(netip.MustParseAddr("10.1.2.3")) }) {
		t.Errorf("/0 except a /32: %v", rs)
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.0/8": "10.255.255.255", "10.1.2.3/32": "10.1.2.3", "0.0.0.0/0": "255.255.255.255",
		"fd00::/64": "fd00::ffff:ffff:ffff:ffff", "10.0.0.5/30": "10.0.0.7"} {
		if got := LastAddr(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("LastAddr(%s) = %v, want %s", in, got, want)
		}
	}
}

// TestFilterShape: what one ingress policy compiles to.
func TestFilterShape(t *testing.T) {
	eps, nss := universe(nil, nil)
	s, err := Compile(mustParse(t, pol("x", "p", `  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: serve-81-tcp}, {protocol: UDP}]
  - from: [{ipBlock: {cidr: 192.168.0.0/24, except: [192.168.0.128/25]}}]`)), nss)
	if err != nil {
		t.Fatal(err)
	}
	var all []Addressed
	for _, e := range eps {
		all = append(all, Addressed{Endpoint: e.peer.Endpoint, Addrs: []netip.Addr{e.peer.IP}})
	}
	f := s.Filter(all[:1], all) // x/a, 10.0.1.1, is local
	xa := netip.MustParseAddr("10.0.1.1")
	want := []Allow{
		{Local: xa, Peer: netip.MustParsePrefix("10.0.1.2/32"), Proto: ProtocolTCP, First: 81, Last: 81},
		{Local: xa, Peer: netip.MustParsePrefix("10.0.1.2/32"), Proto: ProtocolUDP, First: 0, Last: 65535},
		{Local: xa, Peer: netip.MustParsePrefix("192.168.0.0/25")},
	}
	if !slices.Equal(f.IsolatedIngress, []netip.Addr{xa}) || len(f.IsolatedEgress) != 0 || !slices.Equal(f.Ingress, want) || len(f.Egress) != 0 {
		t.Errorf("filter %+v\nwant ingress %+v", f, want)
	}
	if (*Set)(nil).Filter(all, all).IsolatedIngress != nil {
		t.Error("no policies isolate nothing")
	}
}

func TestProtocolNumbers(t *testing.T) {
	for _, p := range []Protocol{ProtocolTCP, ProtocolUDP, ProtocolSCTP} {
		n, ok := p.Number()
		if !ok || ProtocolOf(n) != p {
			t.Errorf("%s: number %d %v, back %q", p, n, ok, ProtocolOf(n))
		}
	}
	if n, ok := Protocol("ICMP").Number(); ok {
		t.Errorf("ICMP has number %d", n)
	}
	if p := ProtocolOf(1); p != "" {
		t.Errorf("protocol 1 is %q, want none", p)
	}
}
