package policy

import (
	"github.com/slimnet/slim/internal/manifest"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The only kinds Parse reads.
const (
	apiVersion = "networking.k8s.io/v1"
	kindPolicy = "NetworkPolicy"
	kindList   = "NetworkPolicyList"
)

var policyKind = manifest.Kind[networkingv1.NetworkPolicy, networkingv1.NetworkPolicyList]{
	APIVersion: apiVersion, Kind: kindPolicy, ListKind: kindList, Noun: "policy",
	Items:  func(l *networkingv1.NetworkPolicyList) []networkingv1.NetworkPolicy { return l.Items },
	Meta:   func(p *networkingv1.NetworkPolicy) *metav1.TypeMeta { return &p.TypeMeta },
	Name:   key,
	Finish: finish,
}

// Parse reads NetworkPolicy objects from YAML or JSON: one object, a
// multi-document YAML stream ("---"), a v1 List or a NetworkPolicyList.
// Every object must be a networking.k8s.io/v1 NetworkPolicy (items of a
// NetworkPolicyList may leave apiVersion and kind out). Decoding is strict,
// as the API server's (see package manifest). A policy without a
// namespace gets DefaultNamespace, then is Validated. Errors say which
// document and item they are about and name the policy. Empty documents
// are skipped; no policies at all is not an error.
func Parse(data []byte) ([]networkingv1.NetworkPolicy, error) { return policyKind.Parse(data) }

// finish defaults the namespace and validates.
func finish(p *networkingv1.NetworkPolicy) error {
	p.Namespace = namespaceOr(p.Namespace)
	return Validate(p)
}
