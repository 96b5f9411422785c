package policy

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestValidate works on the Go types, for what YAML cannot say and for
// callers that build policies in code (the store).
func TestValidate(t *testing.T) {
	ptr := func(i int32) *int32 { return &i }
	proto := func(p corev1.Protocol) *corev1.Protocol { return &p }
	port := func(p networkingv1.NetworkPolicyPort) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "x"},
			Spec:       networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{p}}}},
		}
	}
	num, name := intstr.FromInt32(80), intstr.FromString("http")
	tests := []struct {
		name string
		p    *networkingv1.NetworkPolicy
		want []string // the field errors, in order; none: valid
	}{
		{"no namespace is default", &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}}, nil},
		{"every port form", &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "p.q-1", Namespace: "x"},
			Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
				{}, {Protocol: proto(corev1.ProtocolSCTP)}, {Port: &num}, {Port: &num, EndPort: ptr(80)}, {Port: &name, Protocol: proto(corev1.ProtocolUDP)},
				{Port: &num, EndPort: ptr(65535)},
			}}}},
		}, nil},
		{"endPort without port", port(networkingv1.NetworkPolicyPort{EndPort: ptr(90)}),
			[]string{"spec.egress[0].ports[0].endPort: Invalid value: 90: may not be specified without port"}},
		{"negative port", port(networkingv1.NetworkPolicyPort{Port: &intstr.IntOrString{IntVal: -1}}),
			[]string{"spec.egress[0].ports[0].port: Invalid value: -1: must be between 1 and 65535, inclusive"}},
		{"numeric string is not a port name", port(networkingv1.NetworkPolicyPort{Port: &intstr.IntOrString{Type: intstr.String, StrVal: "80"}}),
			[]string{`spec.egress[0].ports[0].port: Invalid value: "80": must contain at least one letter (a-z)`}},
		{"empty protocol", port(networkingv1.NetworkPolicyPort{Protocol: proto("")}),
			[]string{`spec.egress[0].ports[0].protocol: Unsupported value: ""`}},
		{"lowercase protocol", port(networkingv1.NetworkPolicyPort{Protocol: proto("tcp")}),
			[]string{`spec.egress[0].ports[0].protocol: Unsupported value: "tcp"`}},
		{"every problem is listed", &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "-p-", Namespace: "Big"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpExists, Values: []string{"v"}}}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{IPBlock: &networkingv1.IPBlock{CIDR: "::ffff:10.0.0.0/104"}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16", "bogus"}}, NamespaceSelector: &metav1.LabelSelector{}},
				}}},
				PolicyTypes: []networkingv1.PolicyType{"Ingress", "Egress", "Ingress"},
			},
		}, []string{
			`metadata.name: Invalid value: "-p-"`,
			`metadata.namespace: Invalid value: "Big"`,
			"spec.podSelector.matchExpressions[0].values: Invalid value",
			`spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "::ffff:10.0.0.0/104": must not be an IPv4-mapped IPv6 prefix`,
			`spec.ingress[0].from[1].ipBlock.except[1]: Invalid value: "bogus"`,
			"spec.ingress[0].from[1]: Forbidden: may not specify both ipBlock and another peer",
			`spec.policyTypes[2]: Duplicate value: "Ingress"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.p)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("Validate error %v, want an *InvalidError", err)
			}
			if len(inv.Errs) != len(tt.want) {
				t.Errorf("got %d errors, want %d: %v", len(inv.Errs), len(tt.want), err)
			}
			for i, w := range tt.want {
				if i < len(inv.Errs) && !strings.Contains(inv.Errs[i].Error(), w) {
					t.Errorf("error %d is %q, want it to contain %q", i, inv.Errs[i].Error(), w)
				}
			}
			if !strings.HasPrefix(err.Error(), "invalid policy "+key(tt.p)+": ") {
				t.Errorf("error %q does not name the policy first", err)
			}
		})
	}
}
