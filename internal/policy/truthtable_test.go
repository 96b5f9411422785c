package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

// The truth-table universe of the upstream network policy e2e tests
// (test/e2e/network/netpol), in pure form: namespaces x, y and z, each
// with endpoints a, b and c labelled pod=a etc., all serving the same
// named ports. Endpoint <ns>/<pod> has address 10.0.<ns>.<pod>: x/a is
// 10.0.1.1, y/b 10.0.2.2, z/c 10.0.3.3.
var (
	universeNS   = []string{"x", "y", "z"}
	universePods = []string{"a", "b", "c"}
	servePorts   = []NamedPort{
		{Name: "serve-80-tcp", Port: 80, Protocol: ProtocolTCP},
		{Name: "serve-81-tcp", Port: 81, Protocol: ProtocolTCP},
		{Name: "serve-80-udp", Port: 80, Protocol: ProtocolUDP},
		{Name: "serve-81-udp", Port: 81, Protocol: ProtocolUDP},
	}
)

// universeEndpoint is one endpoint of the universe, by its "ns/pod" name.
type universeEndpoint struct {
	name string
	peer Peer
}

// universe builds the 9 endpoints and 3 namespaces. Extra labels, by
// "ns/pod" or by namespace, are added to the defaults.
func universe(podLabels, nsLabels map[string]map[string]string) ([]universeEndpoint, []Namespace) {
	var eps []universeEndpoint
	var nss []Namespace
	for i, ns := range universeNS {
		// A caller-set metadata.name must not win over the namespace's name.
		l := map[string]string{"kubernetes.io/metadata.name": "spoofed"}
		maps.Copy(l, nsLabels[ns])
		nss = append(nss, Namespace{Name: ns, Labels: l})
		for j, pod := range universePods {
			name := ns + "/" + pod
			l := map[string]string{"pod": pod}
			maps.Copy(l, podLabels[name])
			eps = append(eps, universeEndpoint{name: name, peer: Peer{
				IP:       netip.AddrFrom4([4]byte{10, 0, byte(i + 1), byte(j + 1)}),
				Endpoint: &Endpoint{Namespace: ns, Labels: l, Ports: servePorts},
			}})
		}
	}
	return eps, nss
}

// pol is a NetworkPolicy manifest for namespace ns with the given spec
// (YAML, indented as under "spec:"). Namespace y must be quoted in YAML:
// unquoted, y is a boolean (see TestParseErrors).
func pol(ns, name, spec string) string {
	return fmt.Sprintf("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: %s\n  namespace: %q\nspec:\n%s\n", name, ns, spec)
}

func mustParse(t testing.TB, manifests ...string) []networkingv1.NetworkPolicy {
	t.Helper()
	ps, err := Parse([]byte(strings.Join(manifests, "")))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return ps
}

// A probe checks the whole reachability matrix at one port and protocol.
type probe struct {
	port  uint16
	proto Protocol
	want  cells
}

// cells describes a matrix as exceptions to "everything allowed": rules
// "X FROM>TO" (denied) and ". FROM>TO" (allowed), applied in order, the
// last match winning. FROM and TO are an endpoint ("x/a"), a namespace
// ("x/*") or "*".
type cells []string

// Common matrices.
var (
	allAllowed   = cells{}
	nothingToXA  = cells{"X *>x/a"} // x/a isolated for ingress, nothing allowed in
	nothingToX   = cells{"X *>x/*"} // ingress to all of x denied
	nothingFromX = cells{"X x/*>*"} // egress from all of x denied
	onlyYToXA    = cells{"X *>x/a", ". y/*>x/a"}
)

func TestTruthTable(t *testing.T) {
	tcp80 := func(want cells) []probe { return []probe{{80, ProtocolTCP, want}} }
	tests := []struct {
		name      string
		policies  []string
		podLabels map[string]map[string]string
		nsLabels  map[string]map[string]string
		probes    []probe
	}{
		{
			name: "no policies",
			probes: []probe{
				{80, ProtocolTCP, allAllowed}, {81, ProtocolUDP, allAllowed}, {9, ProtocolSCTP, allAllowed},
			},
		},
		{
			name:     "default-deny ingress",
			policies: []string{pol("x", "deny-ingress", "  podSelector: {}\n  policyTypes: [Ingress]")},
			probes:   []probe{{80, ProtocolTCP, nothingToX}, {81, ProtocolUDP, nothingToX}},
		},
		{
			name:     "default-deny ingress by policyTypes defaulting",
			policies: []string{pol("x", "deny-ingress", "  podSelector: {}\n  ingress: []\n  egress: []")},
			probes:   tcp80(nothingToX),
		},
		{
			name:     "default-deny egress",
			policies: []string{pol("x", "deny-egress", "  podSelector: {}\n  policyTypes: [Egress]")},
			probes:   []probe{{80, ProtocolTCP, nothingFromX}, {80, ProtocolUDP, nothingFromX}},
		},
		{
			name:     "default-deny both",
			policies: []string{pol("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress, Egress]")},
			probes:   tcp80(cells{"X *>x/*", "X x/*>*"}),
		},
		{
			name:     "deny egress of one pod",
			policies: []string{pol("x", "deny-egress-a", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]")},
			probes:   tcp80(cells{"X x/a>*"}),
		},
		{
			name:     "allow all ingress with an empty rule",
			policies: []string{pol("x", "allow-all", "  podSelector: {}\n  ingress: [{}]")},
			probes:   []probe{{80, ProtocolTCP, allAllowed}, {81, ProtocolSCTP, allAllowed}},
		},
		{
			name:     "allow from the same namespace",
			policies: []string{pol("x", "same-ns", "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}")},
			probes:   tcp80(cells{"X y/*>x/*", "X z/*>x/*"}),
		},
		{
			name:     "allow from pod=b only",
			policies: []string{pol("x", "x-a-allows-x-b", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}")},
			probes:   tcp80(cells{"X *>x/a", ". x/b>x/a"}),
		},
		{
			name:     "namespaceSelector alone",
			policies: []string{pol("x", "allow-ns-y", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}")},
			probes:   tcp80(onlyYToXA),
		},
		{
			name:     "empty namespaceSelector selects all namespaces",
			policies: []string{pol("x", "allow-all-ns", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {}")},
			probes:   tcp80(allAllowed),
		},
		{
			name: "podSelector and namespaceSelector in one peer",
			policies: []string{pol("x", "and", `  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]
      podSelector: {matchLabels: {pod: b}}`)},
			probes: tcp80(cells{"X *>x/a", ". y/b>x/a", ". z/b>x/a"}),
		},
		{
			name: "podSelector or namespaceSelector as two peers",
			policies: []string{pol("x", "or", `  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]
    - podSelector: {matchLabels: {pod: b}}`)},
			probes: tcp80(cells{"X x/a>x/a", "X x/c>x/a"}),
		},
		{
			name:     "matchExpressions In",
			policies: []string{pol("x", "in", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}")},
			probes:   tcp80(cells{"X *>x/a", ". x/b>x/a", ". x/c>x/a"}),
		},
		{
			// Selects the policy's targets with NotIn: x/b and x/c.
			name:     "matchExpressions NotIn",
			policies: []string{pol("x", "notin", "  podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [a]}]}\n  policyTypes: [Ingress]")},
			probes:   tcp80(cells{"X *>x/b", "X *>x/c"}),
		},
		{
			name:      "matchExpressions Exists",
			podLabels: map[string]map[string]string{"y/a": {"team": "blue"}, "z/c": {"team": ""}},
			policies:  []string{pol("x", "exists", "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector: {matchExpressions: [{key: team, operator: Exists}]}")},
			probes:    tcp80(cells{"X *>x/*", ". y/a>x/*", ". z/c>x/*"}),
		},
		{
			name:      "matchExpressions DoesNotExist",
			podLabels: map[string]map[string]string{"y/a": {"team": "blue"}},
			policies:  []string{pol("y", "does-not-exist", "  podSelector: {matchExpressions: [{key: team, operator: DoesNotExist}]}\n  policyTypes: [Egress]")},
			probes:    tcp80(cells{"X y/b>*", "X y/c>*"}),
		},
		{
			name:     "namespace labels beyond the name",
			nsLabels: map[string]map[string]string{"y": {"env": "prod"}, "z": {"env": "dev"}},
			policies: []string{pol("x", "prod", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {env: prod}}")},
			probes:   tcp80(onlyYToXA),
		},
		{
			name:     "ipBlock with except, ingress",
			policies: []string{pol("x", "block", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}")},
			probes:   tcp80(cells{"X y/*>x/a"}),
		},
		{
			name:     "ipBlock with except, egress",
			policies: []string{pol("x", "block", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.2.1/24, except: [10.0.2.2/32]}")},
			probes:   tcp80(cells{"X x/a>*", ". x/a>y/a", ". x/a>y/c"}),
		},
		{
			name:     "named port",
			policies: []string{pol("x", "allow-81", "  podSelector: {}\n  ingress:\n  - ports:\n    - port: serve-81-tcp")},
			probes: []probe{
				{81, ProtocolTCP, allAllowed},
				{80, ProtocolTCP, nothingToX},
				{81, ProtocolUDP, nothingToX}, // the rule's protocol defaults to TCP
			},
		},
		{
			name:     "named port with a protocol that does not match the name",
			policies: []string{pol("x", "allow-81", "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: serve-81-udp, protocol: TCP}")},
			probes:   []probe{{81, ProtocolTCP, nothingToX}, {81, ProtocolUDP, nothingToX}},
		},
		{
			name:     "numeric port from a namespace",
			policies: []string{pol("x", "allow-81-from-y", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}\n    ports:\n    - {port: 81, protocol: TCP}")},
			probes:   []probe{{81, ProtocolTCP, onlyYToXA}, {80, ProtocolTCP, nothingToXA}},
		},
		{
			name:     "endPort range",
			policies: []string{pol("x", "range", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: 81, endPort: 90}")},
			probes: []probe{
				{80, ProtocolTCP, nothingToXA}, {81, ProtocolTCP, allAllowed}, {85, ProtocolTCP, allAllowed},
				{90, ProtocolTCP, allAllowed}, {91, ProtocolTCP, nothingToXA}, {85, ProtocolUDP, nothingToXA},
			},
		},
		{
			name:     "protocol only: UDP allowed, TCP denied",
			policies: []string{pol("x", "udp", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - protocol: UDP")},
			probes: []probe{
				{80, ProtocolUDP, allAllowed}, {5353, ProtocolUDP, allAllowed},
				{80, ProtocolTCP, nothingToXA}, {80, ProtocolSCTP, nothingToXA},
			},
		},
		{
			name:     "SCTP port",
			policies: []string{pol("x", "sctp", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {protocol: SCTP, port: 80}")},
			probes:   []probe{{80, ProtocolSCTP, allAllowed}, {80, ProtocolTCP, nothingToXA}},
		},
		{
			name: "stacked policies, one port each",
			policies: []string{
				pol("x", "allow-81-from-y", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}\n    ports:\n    - port: 81"),
				pol("x", "allow-80-from-y", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}\n    ports:\n    - port: 80"),
			},
			probes: []probe{{80, ProtocolTCP, onlyYToXA}, {81, ProtocolTCP, onlyYToXA}, {82, ProtocolTCP, nothingToXA}},
		},
		{
			name: "stacked policies: deny all plus an allow",
			policies: []string{
				pol("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress]"),
				pol("x", "allow-to-a", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {}\n      namespaceSelector: {}"),
			},
			probes: tcp80(cells{"X *>x/b", "X *>x/c"}),
		},
		{
			// No policyTypes: egress rules make it an Ingress and Egress
			// policy. x/a takes ingress from x/b only and sends to port 80 only.
			name: "policyTypes omitted with egress rules",
			policies: []string{pol("x", "both", `  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
  egress:
  - ports:
    - port: 80`)},
			probes: []probe{
				{80, ProtocolTCP, cells{"X *>x/a", ". x/b>x/a"}},
				{81, ProtocolTCP, cells{"X *>x/a", ". x/b>x/a", "X x/a>*"}},
			},
		},
		{
			name:     "egress to a named port",
			policies: []string{pol("x", "allow-egress", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - port: serve-80-tcp")},
			probes:   []probe{{80, ProtocolTCP, allAllowed}, {81, ProtocolTCP, nothingFromX}, {80, ProtocolUDP, nothingFromX}},
		},
		{
			// Egress of x/a allows y/a only; y/a and y/b take ingress from
			// x/a only. x/a -> y/b passes ingress but not egress.
			name: "egress and ingress must both allow",
			policies: []string{
				pol("x", "allow-to-y-a", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}\n      podSelector: {matchLabels: {pod: a}}"),
				pol("y", "allow-from-x-a", "  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}\n      podSelector: {matchLabels: {pod: a}}"),
			},
			probes: tcp80(cells{"X *>y/a", "X *>y/b", "X x/a>*", ". x/a>y/a"}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps, nss := universe(tt.podLabels, tt.nsLabels)
			s, err := Compile(mustParse(t, tt.policies...), nss)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			for _, p := range tt.probes {
				checkReachability(t, s, eps, p)
			}
		})
	}
}

// TestLabelChange follows the upstream "updated pod" and "updated
// namespace" tests: the same policies, compiled again with new labels.
func TestLabelChange(t *testing.T) {
	policies := mustParse(t,
		pol("x", "from-updated-ns", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns2: updated}}"),
		pol("x", "from-updated-pod", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b, pod2: updated}}"),
		pol("z", "isolate-updated", "  podSelector: {matchLabels: {target: isolated}}\n  policyTypes: [Ingress]"),
	)
	steps := []struct {
		name                string
		podLabels, nsLabels map[string]map[string]string
		want                cells
	}{
		{"before", nil, nil, nothingToXA},
		{"namespace y labelled", nil, map[string]map[string]string{"y": {"ns2": "updated"}}, onlyYToXA},
		{"pod x/b labelled", map[string]map[string]string{"x/b": {"pod2": "updated"}}, nil, cells{"X *>x/a", ". x/b>x/a"}},
		{"pod z/c labelled", map[string]map[string]string{"z/c": {"target": "isolated"}}, nil, cells{"X *>x/a", "X *>z/c"}},
		{"labels removed again", nil, nil, nothingToXA},
	}
	for _, st := range steps {
		eps, nss := universe(st.podLabels, st.nsLabels)
		s, err := Compile(policies, nss)
		if err != nil {
			t.Fatalf("%s: Compile: %v", st.name, err)
		}
		t.Run(st.name, func(t *testing.T) { checkReachability(t, s, eps, probe{80, ProtocolTCP, st.want}) })
	}
}

// checkReachability compares the matrix of s over eps with p.want and
// prints both, with the explanation of each wrong cell, when they differ.
func checkReachability(t *testing.T, s *Set, eps []universeEndpoint, p probe) {
	t.Helper()
	want := parseMatrix(t, eps, p.want)
	// The packet filter's form of the policies must agree with Decide
	// on every cell, every endpoint guarded as a local one.
	var all []Addressed
	for _, e := range eps {
		all = append(all, Addressed{Endpoint: e.peer.Endpoint, Addrs: []netip.Addr{e.peer.IP}})
	}
	f := s.Filter(all, all)
	var got [][]bool
	var wrong []string
	for i, from := range eps {
		row := make([]bool, len(eps))
		for j, to := range eps {
			d := s.Decide(from.peer, to.peer, p.port, p.proto)
			if fa := f.allows(from.peer.IP, to.peer.IP, p.port, p.proto); fa != d.Allowed {
				t.Errorf("%d/%s %s -> %s: the filter allows %v, Decide %v", p.port, p.proto, from.name, to.name, fa, d.Allowed)
			}
			row[j] = d.Allowed
			if d.Allowed != want[i][j] {
				wrong = append(wrong, fmt.Sprintf("%s -> %s: got %s", from.name, to.name, indent(d.Explain(from.name, to.name))))
			}
		}
		got = append(got, row)
	}
	if len(wrong) == 0 {
		return
	}
	t.Errorf("reachability at %d/%s differs (rows from, columns to; '.' allowed, 'X' denied, '!' wrong)\ngot:%s\nwant:%s\n%s",
		p.port, p.proto, formatMatrix(eps, got, want), formatMatrix(eps, want, nil), strings.Join(wrong, "\n"))
}

// parseMatrix expands c over eps: [from][to], true where allowed.
func parseMatrix(t *testing.T, eps []universeEndpoint, c cells) [][]bool {
	t.Helper()
	m := make([][]bool, len(eps))
	for i := range m {
		m[i] = make([]bool, len(eps))
		for j := range m[i] {
			m[i][j] = true
		}
	}
	for _, rule := range c {
		verdict, pair, ok := strings.Cut(rule, " ")
		from, to, ok2 := strings.Cut(pair, ">")
		if !ok || !ok2 || (verdict != "X" && verdict != ".") {
			t.Fatalf("cells rule %q, want \"X FROM>TO\" or \". FROM>TO\"", rule)
		}
		matched := false
		for i, f := range eps {
			for j, e := range eps {
				if matchCell(from, f.name) && matchCell(to, e.name) {
					m[i][j] = verdict == "."
					matched = true
				}
			}
		}
		if !matched {
			t.Fatalf("cells rule %q matches no cell", rule)
		}
	}
	return m
}

// matchCell reports whether pattern ("*", "ns/*" or "ns/pod") names the
// endpoint name.
func matchCell(pattern, name string) bool {
	if pattern == "*" || pattern == name {
		return true
	}
	ns, ok := strings.CutSuffix(pattern, "/*")
	return ok && strings.HasPrefix(name, ns+"/")
}

// formatMatrix prints m in the probe format with a header; where other
// is given and differs, the cell is followed by '!'.
func formatMatrix(eps []universeEndpoint, m, other [][]bool) string {
	var b strings.Builder
	b.WriteString("\n    ")
	for _, e := range eps {
		fmt.Fprintf(&b, " %-4s", e.name)
	}
	for i, e := range eps {
		fmt.Fprintf(&b, "\n%s ", e.name)
		for j := range eps {
			c := "X"
			if m[i][j] {
				c = "."
			}
			if other != nil && other[i][j] != m[i][j] {
				c += "!"
			}
			fmt.Fprintf(&b, " %-4s", c)
		}
	}
	return b.String()
}

func indent(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n\t")
}
