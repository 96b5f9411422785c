package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

// TestDecide covers what the truth tables cannot: peers outside the
// cluster, IPv6 and IPv4-mapped addresses, defaulted and unknown
// namespaces, and the verdicts' reasons.
func TestDecide(t *testing.T) {
	web := &Endpoint{Namespace: "shop", Labels: map[string]string{"app": "web"},
		Ports: []NamedPort{{Name: "http", Port: 8080}, {Name: "dns", Port: 53, Protocol: ProtocolUDP}}}
	db := &Endpoint{Namespace: "shop", Labels: map[string]string{"app": "db"}}
	dflt := &Endpoint{Labels: map[string]string{"app": "tool"}} // namespace default
	other := &Endpoint{Namespace: "lab", Labels: map[string]string{"app": "web"}}

	policies := mustParse(t,
		pol("shop", "web-ingress", `  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}
    - ipBlock: {cidr: 2001:db8::/32, except: ["2001:db8:bad::/48"]}
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: default}}
    ports:
    - port: http
  - from:
    - namespaceSelector: {matchLabels: {team: blue}}
  - ports:
    - {port: 8080}`),
		pol("shop", "db-egress", `  podSelector: {matchLabels: {app: db}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 198.51.100.0/24}
    ports:
    - {port: 443}
  - ports:
    - {port: http}`),
		pol("default", "tool-ingress", "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: web}}"),
	)
	s, err := Compile(policies, []Namespace{
		{Name: "shop"},
		{Name: "lab", Labels: map[string]string{"team": "blue"}},
		// Caller labels cannot rename a namespace.
		{Name: "", Labels: map[string]string{"kubernetes.io/metadata.name": "shop"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ext := func(a string) Peer { return Peer{IP: netip.MustParseAddr(a)} }
	ep := func(a string, e *Endpoint) Peer { return Peer{IP: netip.MustParseAddr(a), Endpoint: e} }

	tests := []struct {
		name     string
		src, dst Peer
		port     uint16
		proto    Protocol
		want     bool
		allowBy  []string // the rules allowing it, both directions
	}{
		{"external in ipBlock", ext("203.0.113.9"), ep("10.0.0.1", web), 9, ProtocolTCP, true, []string{"shop/web-ingress ingress[0]"}},
		{"external in except", ext("203.0.113.200"), ep("10.0.0.1", web), 9, ProtocolTCP, false, nil},
		{"external outside ipBlock", ext("192.0.2.1"), ep("10.0.0.1", web), 9, ProtocolTCP, false, nil},
		{"IPv6 external", ext("2001:db8:1::1"), ep("10.0.0.1", web), 9, ProtocolUDP, true, []string{"shop/web-ingress ingress[0]"}},
		{"IPv6 in except", ext("2001:db8:bad::1"), ep("10.0.0.1", web), 9, ProtocolUDP, false, nil},
		{"IPv4-mapped external", ext("::ffff:203.0.113.9"), ep("10.0.0.1", web), 9, ProtocolTCP, true, []string{"shop/web-ingress ingress[0]"}},
		{"zoned IPv6 external", ext("2001:db8:1::1%eth0"), ep("10.0.0.1", web), 9, ProtocolTCP, true, []string{"shop/web-ingress ingress[0]"}},
		{"invalid address", Peer{}, ep("10.0.0.1", web), 9, ProtocolTCP, false, nil},
		{"ipBlock matches endpoints too", ep("203.0.113.10", other), ep("10.0.0.1", web), 9, ProtocolTCP, true,
			[]string{"shop/web-ingress ingress[0]", "shop/web-ingress ingress[2]"}},
		{"external never matches a selector", ext("192.0.2.1"), ep("10.0.0.1", web), 8080, ProtocolTCP, true, []string{"shop/web-ingress ingress[3]"}},
		{"default namespace by name label, named port", ep("10.0.0.9", dflt), ep("10.0.0.1", web), 8080, ProtocolTCP, true,
			[]string{"shop/web-ingress ingress[1]", "shop/web-ingress ingress[3]"}},
		{"named port on another port", ep("10.0.0.9", dflt), ep("10.0.0.1", web), 8081, ProtocolTCP, false, nil},
		{"namespace labels", ep("10.0.0.5", other), ep("10.0.0.1", web), 1, ProtocolSCTP, true, []string{"shop/web-ingress ingress[2]"}},
		{"namespace not given to Compile", ep("10.0.0.5", &Endpoint{Namespace: "elsewhere", Labels: map[string]string{"app": "web"}}), ep("10.0.0.1", web), 1, ProtocolTCP, false, nil},
		{"empty namespace is default", ep("10.0.0.5", &Endpoint{Namespace: "default", Labels: map[string]string{"app": "web"}}), ep("10.0.0.9", dflt), 1, ProtocolTCP, true,
			[]string{"default/tool-ingress ingress[0]"}},
		{"podSelector peer in the policy's namespace only", ep("10.0.0.1", web), ep("10.0.0.9", dflt), 1, ProtocolTCP, false, nil},
		{"egress to external ipBlock and port", ep("10.0.0.2", db), ext("198.51.100.7"), 443, ProtocolTCP, true, []string{"shop/db-egress egress[0]"}},
		{"egress to external, wrong port", ep("10.0.0.2", db), ext("198.51.100.7"), 80, ProtocolTCP, false, nil},
		{"egress named port to external never matches", ep("10.0.0.2", db), ext("192.0.2.1"), 8080, ProtocolTCP, false, nil},
		{"egress named port resolved on the destination", ep("10.0.0.2", db), ep("10.0.0.1", web), 8080, ProtocolTCP, true,
			[]string{"shop/db-egress egress[1]", "shop/web-ingress ingress[3]"}},
		{"egress named port, destination lacks the name", ep("10.0.0.2", db), ep("10.0.0.3", db), 8080, ProtocolTCP, false, nil},
		{"both sides outside the cluster", ext("192.0.2.1"), ext("192.0.2.2"), 1, ProtocolTCP, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := s.Decide(tt.src, tt.dst, tt.port, tt.proto)
			var by []string
			for _, r := range append(d.Egress.AllowedBy, d.Ingress.AllowedBy...) {
				by = append(by, r.String())
			}
			if d.Allowed != tt.want || !reflect.DeepEqual(by, tt.allowBy) {
				t.Errorf("got allowed=%v by %q, want %v by %q\n%s", d.Allowed, by, tt.want, tt.allowBy, d.Explain("src", "dst"))
			}
			if d.Allowed != (d.Egress.Allowed && d.Ingress.Allowed) {
				t.Errorf("Allowed %v but egress %v, ingress %v", d.Allowed, d.Egress.Allowed, d.Ingress.Allowed)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	policies := mustParse(t,
		pol("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress, Egress]"),
		pol("x", "allow-dns", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - {protocol: UDP, port: 53}\n  - to:\n    - namespaceSelector: {}\n    ports:\n    - {protocol: UDP, port: 53}"),
		pol("x", "a-ingress-only", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{}]"),
	)
	s, err := Compile(policies, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := Peer{IP: netip.MustParseAddr("10.0.1.1"), Endpoint: &Endpoint{Namespace: "x", Labels: map[string]string{"pod": "a"}}}
	y := Peer{IP: netip.MustParseAddr("10.0.2.1"), Endpoint: &Endpoint{Namespace: "y", Labels: map[string]string{"pod": "a"}}}

	d := s.Decide(a, y, 53, ProtocolUDP)
	want := Decision{
		Allowed: true,
		Egress: Verdict{Isolated: true, Allowed: true, Selecting: []string{"x/allow-dns", "x/deny-all"},
			AllowedBy: []RuleRef{{"x/allow-dns", networkingv1.PolicyTypeEgress, 0}, {"x/allow-dns", networkingv1.PolicyTypeEgress, 1}}},
		Ingress: Verdict{Allowed: true},
	}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("a -> y 53/UDP:\ngot  %+v\nwant %+v", d, want)
	}

	// Ingress of x/a: deny-all and a-ingress-only isolate it (allow-dns
	// selects it for egress only); a-ingress-only allows.
	d = s.Decide(y, a, 80, ProtocolTCP)
	want = Decision{
		Allowed: true,
		Egress:  Verdict{Allowed: true},
		Ingress: Verdict{Isolated: true, Allowed: true, Selecting: []string{"x/a-ingress-only", "x/deny-all"},
			AllowedBy: []RuleRef{{"x/a-ingress-only", networkingv1.PolicyTypeIngress, 0}}},
	}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("y -> a 80/TCP:\ngot  %+v\nwant %+v", d, want)
	}

	d = s.Decide(a, a, 80, ProtocolTCP)
	if d.Allowed || d.Egress.Allowed || !d.Ingress.Allowed || len(d.Egress.AllowedBy) != 0 {
		t.Errorf("a -> a 80/TCP: %+v, want denied by egress only", d)
	}

	var none *Set
	if d := none.Decide(a, y, 1, ProtocolTCP); !d.Allowed || d.Egress.Isolated || d.Ingress.Isolated {
		t.Errorf("nil Set: %+v, want allowed, nothing isolated", d)
	}
}

func TestRuleRefString(t *testing.T) {
	for _, tt := range []struct {
		r    RuleRef
		want string
	}{
		{RuleRef{"x/a", networkingv1.PolicyTypeIngress, 0}, "x/a ingress[0]"},
		{RuleRef{"kube-system/allow-dns", networkingv1.PolicyTypeEgress, 12}, "kube-system/allow-dns egress[12]"},
	} {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.r, got, tt.want)
		}
	}
}

func TestExplain(t *testing.T) {
	policies := mustParse(t,
		pol("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress, Egress]"),
		pol("x", "allow-dns", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - {protocol: UDP, port: 53}"),
		pol("x", "allow-web", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - {port: 80}\n  - to:\n    - ipBlock: {cidr: 10.0.2.0/24}"),
		pol("z", "from-x", "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}"),
	)
	s, err := Compile(policies, nil)
	if err != nil {
		t.Fatal(err)
	}
	eps, _ := universe(nil, nil)
	byName := map[string]Peer{"ext": {IP: netip.MustParseAddr("192.0.2.1")}}
	for _, e := range eps {
		byName[e.name] = e.peer
	}
	tests := []struct {
		src, dst string
		port     uint16
		proto    Protocol
		want     string
	}{
		{"y/a", "y/b", 80, ProtocolTCP, `allowed
egress of y/a: not isolated (no policy selects it for egress)
ingress of y/b: not isolated (no policy selects it for ingress)
`},
		{"x/a", "y/a", 53, ProtocolUDP, `allowed
egress of x/a: isolated by x/allow-dns, x/allow-web, x/deny-all; allowed by x/allow-dns egress[0], x/allow-web egress[1]
ingress of y/a: not isolated (no policy selects it for ingress)
`},
		{"x/a", "ext", 443, ProtocolTCP, `denied
egress of x/a: isolated by x/allow-dns, x/allow-web, x/deny-all; no rule allows it
ingress of ext: not isolated (no policy selects it for ingress)
`},
		{"y/a", "x/a", 80, ProtocolTCP, `denied
egress of y/a: not isolated (no policy selects it for egress)
ingress of x/a: isolated by x/deny-all; no rule allows it
`},
		{"x/b", "z/c", 80, ProtocolTCP, `allowed
egress of x/b: isolated by x/allow-dns, x/allow-web, x/deny-all; allowed by x/allow-web egress[0]
ingress of z/c: isolated by z/from-x; allowed by z/from-x ingress[0]
`},
		{"y/c", "z/c", 80, ProtocolTCP, `denied
egress of y/c: not isolated (no policy selects it for egress)
ingress of z/c: isolated by z/from-x; no rule allows it
`},
	}
	for _, tt := range tests {
		t.Run(tt.src+"->"+tt.dst, func(t *testing.T) {
			got := s.Decide(byName[tt.src], byName[tt.dst], tt.port, tt.proto).Explain(tt.src, tt.dst)
			if got != tt.want {
				t.Errorf("Explain:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// BenchmarkDecide decides random connections among 1000 endpoints in 20
// namespaces under 100 policies (5 per namespace: default deny, same-app
// ingress, a cross-namespace allow on a named port, DNS egress and an
// ipBlock egress).
func BenchmarkDecide(b *testing.B) {
	const nsCount, perNS = 20, 50
	var manifests []string
	var nss []Namespace
	var peers []Peer
	for i := range nsCount {
		ns := fmt.Sprintf("team-%02d", i)
		nss = append(nss, Namespace{Name: ns, Labels: map[string]string{"env": []string{"prod", "dev"}[i%2], "team": ns}})
		manifests = append(manifests,
			pol(ns, "default-deny", "  podSelector: {}\n  policyTypes: [Ingress, Egress]"),
			pol(ns, "same-app", "  podSelector: {matchExpressions: [{key: app, operator: Exists}]}\n  ingress:\n  - from:\n    - podSelector: {matchExpressions: [{key: tier, operator: In, values: [web, api]}]}"),
			pol(ns, "from-prod", "  podSelector: {matchLabels: {tier: api}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {env: prod}}\n      podSelector: {matchLabels: {tier: web}}\n    ports:\n    - port: http\n    - {port: 9000, endPort: 9100}"),
			pol(ns, "allow-dns", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}\n    ports:\n    - {protocol: UDP, port: 53}\n    - {protocol: TCP, port: 53}"),
			pol(ns, "egress-cluster", "  podSelector: {matchLabels: {tier: web}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.255.0.0/16]}\n    ports:\n    - port: http"),
		)
		for j := range perNS {
			peers = append(peers, Peer{
				IP: netip.AddrFrom4([4]byte{10, byte(i), byte(j / 250), byte(j%250 + 1)}),
				Endpoint: &Endpoint{
					Namespace: ns,
					Labels:    map[string]string{"app": fmt.Sprintf("app-%d", j%10), "tier": []string{"web", "api", "db"}[j%3], "pod-template-hash": "5d8f7c9b6"},
					Ports:     []NamedPort{{Name: "http", Port: 8080}, {Name: "metrics", Port: 9090}},
				},
			})
		}
	}
	s, err := Compile(mustParse(b, manifests...), nss)
	if err != nil {
		b.Fatal(err)
	}
	type conn struct {
		src, dst Peer
		port     uint16
	}
	rng := rand.New(rand.NewPCG(1, 2))
	conns := make([]conn, 4096)
	allowed := 0
	for i := range conns {
		c := conn{src: peers[rng.IntN(len(peers))], dst: peers[rng.IntN(len(peers))], port: []uint16{8080, 9050, 5432}[rng.IntN(3)]}
		conns[i] = c
		if s.Decide(c.src, c.dst, c.port, ProtocolTCP).Allowed {
			allowed++
		}
	}
	if allowed == 0 || allowed == len(conns) {
		b.Fatalf("%d of %d connections allowed: the benchmark should see both verdicts", allowed, len(conns))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c := &conns[i%len(conns)]
		s.Decide(c.src, c.dst, c.port, ProtocolTCP)
	}
}

// BenchmarkDecideHundredPolicies is slimctl bench --policies 100's
// connect: 100 policies all select the server, one lets the client in,
// and each of the others lets in a label nobody has on a port of its own,
// so every decision weighs all 100.
func BenchmarkDecideHundredPolicies(b *testing.B) {
	manifests := []string{pol("default", "allow", "  podSelector: {matchLabels: {app: bench}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: bench}}")}
	for i := 1; i < 100; i++ {
		manifests = append(manifests, pol("default", fmt.Sprintf("decoy-%d", i),
			fmt.Sprintf("  podSelector: {matchLabels: {app: bench}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {peer: '%d'}}\n    ports:\n    - port: %d", i, 10000+i)))
	}
	s, err := Compile(mustParse(b, manifests...), []Namespace{{Name: "default"}})
	if err != nil {
		b.Fatal(err)
	}
	ep := func(ip string) Peer {
		return Peer{IP: netip.MustParseAddr(ip), Endpoint: &Endpoint{Namespace: "default", Labels: map[string]string{"app": "bench"}}}
	}
	cli, srv := ep("10.244.2.2"), ep("10.244.1.2")
	if d := s.Decide(cli, srv, 7203, ProtocolTCP); !d.Allowed || len(d.Ingress.AllowedBy) != 1 {
		b.Fatalf("decision %+v, want allowed by one policy", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.Decide(cli, srv, 7203, ProtocolTCP)
	}
}

// TestDecideConcurrent runs Decide from several goroutines; with -race it
// checks that a Set is safe to share.
func TestDecideConcurrent(t *testing.T) {
	eps, nss := universe(nil, nil)
	s, err := Compile(mustParse(t, pol("x", "same-ns", "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}")), nss)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan string)
	for g := range 4 {
		go func() {
			var b strings.Builder
			for i := range 200 {
				from, to := eps[(g+i)%len(eps)], eps[(g*7+i)%len(eps)]
				d := s.Decide(from.peer, to.peer, 80, ProtocolTCP)
				want := to.name[0] != 'x' || from.name[0] == 'x'
				if d.Allowed != want {
					fmt.Fprintf(&b, "%s -> %s: allowed %v\n", from.name, to.name, d.Allowed)
				}
			}
			done <- b.String()
		}()
	}
	for range 4 {
		if msg := <-done; msg != "" {
			t.Error(msg)
		}
	}
}
