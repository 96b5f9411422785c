package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCompileErrors(t *testing.T) {
	valid := func(ns, name string) networkingv1.NetworkPolicy {
		return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	invalid := valid("x", "p")
	invalid.Spec.PolicyTypes = []networkingv1.PolicyType{"Sideways"}
	tests := []struct {
		name       string
		policies   []networkingv1.NetworkPolicy
		namespaces []Namespace
		want       string
	}{
		{"duplicate policy", []networkingv1.NetworkPolicy{valid("x", "p"), valid("y", "p"), valid("x", "p")}, nil, "policy x/p given twice"},
		{"duplicate policy by default namespace", []networkingv1.NetworkPolicy{valid("", "p"), valid("default", "p")}, nil, "policy default/p given twice"},
		{"invalid policy", []networkingv1.NetworkPolicy{invalid}, nil, `invalid policy x/p: spec.policyTypes[0]: Unsupported value: "Sideways"`},
		{"duplicate namespace", nil, []Namespace{{Name: "default"}, {Name: "x"}, {Name: ""}}, "namespace default given twice"},
		{"invalid namespace", nil, []Namespace{{Name: "X_Y"}}, `namespace "X_Y": a lowercase RFC 1123 label`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.policies, tt.namespaces)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile error %v, want one containing %q", err, tt.want)
			}
		})
	}
	_, err := Compile([]networkingv1.NetworkPolicy{invalid}, nil)
	if inv := (*InvalidError)(nil); !errors.As(err, &inv) {
		t.Errorf("invalid policy: error %T, want *InvalidError", err)
	}
}

// TestCompileCopies checks that a Set does not change when the caller
// reuses what it compiled from.
func TestCompileCopies(t *testing.T) {
	policies := mustParse(t, pol("x", "from-blue", `  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: team, operator: In, values: [blue]}]}
    - ipBlock: {cidr: 192.0.2.0/24}
    ports:
    - port: serve-80-tcp`))
	nsLabels := map[string]string{"team": "blue"}
	s, err := Compile(policies, []Namespace{{Name: "y", Labels: nsLabels}})
	if err != nil {
		t.Fatal(err)
	}
	eps, _ := universe(nil, nil)
	xa, ya := eps[0].peer, eps[3].peer
	ext := Peer{IP: netip.MustParseAddr("192.0.2.1")}
	check := func(when string) {
		t.Helper()
		if !s.Decide(ya, xa, 80, ProtocolTCP).Allowed || !s.Decide(ext, xa, 80, ProtocolTCP).Allowed || s.Decide(ya, xa, 81, ProtocolTCP).Allowed {
			t.Errorf("%s: decisions changed", when)
		}
	}
	check("after Compile")
	nsLabels["team"] = "red"
	p := &policies[0].Spec
	p.PodSelector.MatchLabels["pod"] = "b"
	p.Ingress[0].From[0].NamespaceSelector.MatchExpressions[0].Values[0] = "red"
	p.Ingress[0].From[1].IPBlock.CIDR = "198.51.100.0/24"
	p.Ingress[0].Ports[0].Port.StrVal = "serve-81-tcp"
	p.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	check("after changing the inputs")
}

func TestTypes(t *testing.T) {
	in, eg := networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress
	tests := []struct {
		name string
		spec networkingv1.NetworkPolicySpec
		want []networkingv1.PolicyType
	}{
		{"nothing", networkingv1.NetworkPolicySpec{}, []networkingv1.PolicyType{in}},
		{"ingress rules", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{}}}, []networkingv1.PolicyType{in}},
		{"egress rules", networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{}}}, []networkingv1.PolicyType{in, eg}},
		{"empty egress list", networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{}}, []networkingv1.PolicyType{in}},
		{"empty policyTypes", networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{}}, []networkingv1.PolicyType{in}},
		{"egress only", networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{eg}, Ingress: []networkingv1.NetworkPolicyIngressRule{{}}}, []networkingv1.PolicyType{eg}},
		{"both, given backwards", networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{eg, in}}, []networkingv1.PolicyType{in, eg}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Types(&networkingv1.NetworkPolicy{Spec: tt.spec})
			if len(got) != len(tt.want) || (len(got) > 0 && got[0] != tt.want[0]) || (len(got) > 1 && got[1] != tt.want[1]) {
				t.Errorf("Types = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSelectorString(t *testing.T) {
	tests := []struct {
		sel  metav1.LabelSelector
		want string
	}{
		{metav1.LabelSelector{}, ""},
		{metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a", "app": "web"}}, "app=web,pod=a"},
		{metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "db"}},
			{Key: "canary", Operator: metav1.LabelSelectorOpDoesNotExist},
		}}, "!canary,tier in (db,web)"},
		{metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}, "<invalid>"},
	}
	for _, tt := range tests {
		if got := SelectorString(&tt.sel); got != tt.want {
			t.Errorf("SelectorString(%+v) = %q, want %q", tt.sel, got, tt.want)
		}
	}
}
