package policy

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// DefaultNamespace is the namespace of a policy or endpoint that names none.
const DefaultNamespace = "default"

// InvalidError is a policy that fails validation. Errs carry the field
// paths (spec.ingress[0].ports[1].endPort) and read like the API server's.
type InvalidError struct {
	Policy string // "namespace/name"
	Errs   field.ErrorList
}

func (e *InvalidError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, fe := range e.Errs {
		msgs[i] = fe.Error()
	}
	return fmt.Sprintf("invalid policy %s: %s", e.Policy, strings.Join(msgs, "; "))
}

// Validate checks one policy as the API server would, for what Slim relies
// on: the name is a DNS-1123 subdomain and the namespace a DNS-1123 label
// (empty means DefaultNamespace); selectors are valid; policyTypes holds
// only Ingress and Egress, once each; each peer has either an ipBlock or
// pod and/or namespace selectors; ipBlock CIDRs parse and each except is
// strictly inside its cidr; ports have protocol TCP, UDP or SCTP, a port
// number 1-65535 or a port name, and an endPort only after a numeric port,
// not below it. The error is an *InvalidError listing every problem.
func Validate(p *networkingv1.NetworkPolicy) error {
	errs := validateMeta(&p.ObjectMeta)
	errs = append(errs, validateSpec(&p.Spec, field.NewPath("spec"))...)
	if len(errs) > 0 {
		return &InvalidError{Policy: key(p), Errs: errs}
	}
	return nil
}

// Types is the directions p isolates, after the API server's defaulting:
// the policyTypes given, or else Ingress always and Egress when p has
// egress rules. The order is always Ingress, Egress.
func Types(p *networkingv1.NetworkPolicy) []networkingv1.PolicyType {
	in, eg := directions(&p.Spec)
	var ts []networkingv1.PolicyType
	if in {
		ts = append(ts, networkingv1.PolicyTypeIngress)
	}
	if eg {
		ts = append(ts, networkingv1.PolicyTypeEgress)
	}
	return ts
}

// directions reports whether the spec isolates ingress and egress.
func directions(s *networkingv1.NetworkPolicySpec) (ingress, egress bool) {
	if len(s.PolicyTypes) == 0 {
		// The API server's defaulting; an explicit empty list is the same
		// as none.
		return true, len(s.Egress) > 0
	}
	return slices.Contains(s.PolicyTypes, networkingv1.PolicyTypeIngress),
		slices.Contains(s.PolicyTypes, networkingv1.PolicyTypeEgress)
}

// SelectorString renders a label selector in the kubectl form
// ("pod=a,tier in (db,web)"); the empty selector, which selects
// everything, renders as "".
func SelectorString(s *metav1.LabelSelector) string {
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return "<invalid>"
	}
	return sel.String()
}

// key names a policy as "namespace/name".
func key(p *networkingv1.NetworkPolicy) string {
	return namespaceOr(p.Namespace) + "/" + p.Name
}

func namespaceOr(ns string) string {
	if ns == "" {
		return DefaultNamespace
	}
	return ns
}

func validateMeta(m *metav1.ObjectMeta) field.ErrorList {
	var errs field.ErrorList
	path := field.NewPath("metadata")
	if m.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), ""))
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(m.Name) {
			errs = append(errs, field.Invalid(path.Child("name"), m.Name, msg))
		}
	}
	if m.Namespace != "" {
		for _, msg := range validation.IsDNS1123Label(m.Namespace) {
			errs = append(errs, field.Invalid(path.Child("namespace"), m.Namespace, msg))
		}
	}
	return errs
}

var allProtocols = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}

func validateSpec(s *networkingv1.NetworkPolicySpec, path *field.Path) field.ErrorList {
	errs := validateSelector(&s.PodSelector, path.Child("podSelector"))
	for i := range s.Ingress {
		r := &s.Ingress[i]
		rp := path.Child("ingress").Index(i)
		for j := range r.Ports {
			errs = append(errs, validatePort(&r.Ports[j], rp.Child("ports").Index(j))...)
		}
		for j := range r.From {
			errs = append(errs, validatePeer(&r.From[j], rp.Child("from").Index(j))...)
		}
	}
	for i := range s.Egress {
		r := &s.Egress[i]
		rp := path.Child("egress").Index(i)
		for j := range r.Ports {
			errs = append(errs, validatePort(&r.Ports[j], rp.Child("ports").Index(j))...)
		}
		for j := range r.To {
			errs = append(errs, validatePeer(&r.To[j], rp.Child("to").Index(j))...)
		}
	}
	types := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	for i, t := range s.PolicyTypes {
		tp := path.Child("policyTypes").Index(i)
		switch {
		case !slices.Contains(types, t):
			errs = append(errs, field.NotSupported(tp, t, types))
		case slices.Contains(s.PolicyTypes[:i], t):
			errs = append(errs, field.Duplicate(tp, t))
		}
	}
	return errs
}

// validateSelector checks a label selector with the conversion the
// matching uses. On failure it converts the parts one by one, so the error
// points at the bad label or expression rather than the whole selector.
func validateSelector(s *metav1.LabelSelector, path *field.Path) field.ErrorList {
	_, err := metav1.LabelSelectorAsSelector(s)
	if err == nil {
		return nil
	}
	var errs field.ErrorList
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		one := &metav1.LabelSelector{MatchLabels: map[string]string{k: s.MatchLabels[k]}}
		if _, err := metav1.LabelSelectorAsSelector(one); err != nil {
			// The parser's paths ("values[0][key]") mean nothing here.
			errs = append(errs, selectorErrors(path.Child("matchLabels").Key(k), false, err)...)
		}
	}
	for i := range s.MatchExpressions {
		one := &metav1.LabelSelector{MatchExpressions: s.MatchExpressions[i : i+1]}
		if _, err := metav1.LabelSelectorAsSelector(one); err != nil {
			errs = append(errs, selectorErrors(path.Child("matchExpressions").Index(i), true, err)...)
		}
	}
	if len(errs) == 0 {
		errs = selectorErrors(path, false, err)
	}
	return errs
}

// selectorErrors re-roots the label parser's field errors at path; with
// sub, their relative paths (key, values[0]) are kept below it.
func selectorErrors(path *field.Path, sub bool, err error) field.ErrorList {
	list := []error{err}
	if agg, ok := err.(utilerrors.Aggregate); ok {
		list = agg.Errors()
	}
	var errs field.ErrorList
	for _, e := range list {
		var fe *field.Error
		if !errors.As(e, &fe) {
			// Not a field error (a bad operator): its message names the value.
			errs = append(errs, &field.Error{Type: field.ErrorTypeInvalid, Field: path.String(), BadValue: field.OmitValueType{}, Detail: e.Error()})
			continue
		}
		re := *fe
		re.Field = path.String()
		if sub && fe.Field != "" {
			re.Field += "." + fe.Field
		}
		errs = append(errs, &re)
	}
	return errs
}

func validatePeer(p *networkingv1.NetworkPolicyPeer, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	n := 0
	if p.PodSelector != nil {
		n++
		errs = append(errs, validateSelector(p.PodSelector, path.Child("podSelector"))...)
	}
	if p.NamespaceSelector != nil {
		n++
		errs = append(errs, validateSelector(p.NamespaceSelector, path.Child("namespaceSelector"))...)
	}
	if p.IPBlock != nil {
		n++
		errs = append(errs, validateIPBlock(p.IPBlock, path.Child("ipBlock"))...)
	}
	switch {
	case n == 0:
		errs = append(errs, field.Required(path, "must specify a peer: ipBlock, podSelector or namespaceSelector"))
	case n > 1 && p.IPBlock != nil:
		errs = append(errs, field.Forbidden(path, "may not specify both ipBlock and another peer"))
	}
	return errs
}

func validateIPBlock(b *networkingv1.IPBlock, path *field.Path) field.ErrorList {
	cidr, errs := parseCIDR(b.CIDR, path.Child("cidr"))
	for i, s := range b.Except {
		ep := path.Child("except").Index(i)
		ex, exErrs := parseCIDR(s, ep)
		errs = append(errs, exErrs...)
		if !cidr.IsValid() || !ex.IsValid() {
			continue
		}
		switch {
		case ex.Addr().Is4() != cidr.Addr().Is4():
			errs = append(errs, field.Invalid(ep, s, fmt.Sprintf("must be of the same IP family as cidr %s", b.CIDR)))
		case ex.Bits() <= cidr.Bits() || !cidr.Contains(ex.Addr()):
			errs = append(errs, field.Invalid(ep, s, fmt.Sprintf("must be strictly inside cidr %s", b.CIDR)))
		}
	}
	return errs
}

// parseCIDR parses an ipBlock CIDR and masks it; host bits are allowed, as
// the API server's legacy validation allows them.
func parseCIDR(s string, path *field.Path) (netip.Prefix, field.ErrorList) {
	if s == "" {
		return netip.Prefix{}, field.ErrorList{field.Required(path, "")}
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, field.ErrorList{field.Invalid(path, s, "must be a CIDR such as 10.0.0.0/8 or fd00::/64")}
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, field.ErrorList{field.Invalid(path, s, "must not be an IPv4-mapped IPv6 prefix; use the IPv4 form")}
	}
	return p.Masked(), nil
}

func validatePort(p *networkingv1.NetworkPolicyPort, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if p.Protocol != nil && !slices.Contains(allProtocols, *p.Protocol) {
		errs = append(errs, field.NotSupported(path.Child("protocol"), *p.Protocol, allProtocols))
	}
	switch {
	case p.Port == nil:
		if p.EndPort != nil {
			errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, "may not be specified without port"))
		}
	case p.Port.Type == intstr.Int:
		for _, msg := range validation.IsValidPortNum(int(p.Port.IntVal)) {
			errs = append(errs, field.Invalid(path.Child("port"), p.Port.IntVal, msg))
		}
		if p.EndPort != nil {
			for _, msg := range validation.IsValidPortNum(int(*p.EndPort)) {
				errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, msg))
			}
			if *p.EndPort < p.Port.IntVal {
				errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, fmt.Sprintf("must be greater than or equal to port %d", p.Port.IntVal)))
			}
		}
	default:
		for _, msg := range validation.IsValidPortName(p.Port.StrVal) {
			errs = append(errs, field.Invalid(path.Child("port"), p.Port.StrVal, msg))
		}
		if p.EndPort != nil {
			errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, fmt.Sprintf("may not be specified with a named port (%q)", p.Port.StrVal)))
		}
	}
	return errs
}
