package policy

import (
	"fmt"
	"iter"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Decision is the verdict for one connection: allowed when the egress of
// the source and the ingress of the destination both allow it.
type Decision struct {
	Allowed bool
	Egress  Verdict // of the source; allows everything when it is outside the cluster
	Ingress Verdict // of the destination; likewise
}

// Verdict is one direction's decision and why. Selecting lists the
// policies that select the endpoint and isolate this direction ("ns/name",
// sorted); the endpoint is Isolated when there is any. AllowedBy lists
// every rule of those policies that matches the connection, in the same
// order; it is empty when the direction is denied, and when it is not
// isolated (everything is allowed, by no rule).
type Verdict struct {
	Isolated  bool
	Allowed   bool
	Selecting []string
	AllowedBy []RuleRef
}

// RuleRef names one rule of one policy.
type RuleRef struct {
	Policy string                  // "namespace/name"
	Type   networkingv1.PolicyType // which list Rule indexes: Ingress or Egress
	Rule   int                     // index in spec.ingress or spec.egress
}

// String is "ns/name ingress[0]" or "ns/name egress[1]".
func (r RuleRef) String() string {
	return fmt.Sprintf("%s %s[%d]", r.Policy, strings.ToLower(string(r.Type)), r.Rule)
}

// notIsolated is the verdict of a direction no policy isolates, or of a
// peer outside the cluster.
var notIsolated = Verdict{Allowed: true}

// Decide is the verdict for a connection from src to dst at port and
// proto: the egress policies of src (when src.Endpoint != nil) and the
// ingress policies of dst (when dst.Endpoint != nil) must both allow it.
// It runs on every connect: it only matches precompiled selectors and
// allocates only for the policy and rule names it returns.
func (s *Set) Decide(src, dst Peer, port uint16, proto Protocol) Decision {
	d := Decision{Egress: notIsolated, Ingress: notIsolated}
	if s == nil {
		d.Allowed = true
		return d
	}
	if src.Endpoint != nil {
		d.Egress = s.verdict(networkingv1.PolicyTypeEgress, src.Endpoint, dst, dst.Endpoint, port, proto)
	}
	if dst.Endpoint != nil {
		d.Ingress = s.verdict(networkingv1.PolicyTypeIngress, dst.Endpoint, src, dst.Endpoint, port, proto)
	}
	d.Allowed = d.Egress.Allowed && d.Ingress.Allowed
	return d
}

// verdict decides direction dir of endpoint e talking to other; dst is
// the destination endpoint, where named ports resolve.
func (s *Set) verdict(dir networkingv1.PolicyType, e *Endpoint, other Peer, dst *Endpoint, port uint16, proto Protocol) Verdict {
	var v Verdict
	ip := other.IP.Unmap().WithZone("")
	for c, rules := range s.selecting(dir, e) {
		v.Selecting = append(v.Selecting, c.name)
		for i := range rules {
			if s.ruleMatches(&rules[i], c.namespace, other.Endpoint, ip, dst, port, proto) {
				v.AllowedBy = append(v.AllowedBy, RuleRef{Policy: c.name, Type: dir, Rule: i})
			}
		}
	}
	v.Isolated = len(v.Selecting) > 0
	v.Allowed = !v.Isolated || len(v.AllowedBy) > 0
	return v
}

// selecting yields the policies that select e and isolate dir, in name
// order, each with its rules of that direction.
func (s *Set) selecting(dir networkingv1.PolicyType, e *Endpoint) iter.Seq2[*compiled, []rule] {
	return func(yield func(*compiled, []rule) bool) {
		for _, c := range s.byNS[namespaceOr(e.Namespace)] {
			rules := c.inRules
			if dir == networkingv1.PolicyTypeEgress {
				if !c.egress {
					continue
				}
				rules = c.egRules
			} else if !c.ingress {
				continue
			}
			if c.selector.Matches(labels.Set(e.Labels)) && !yield(c, rules) {
				return
			}
		}
	}
}

func (s *Set) ruleMatches(r *rule, policyNS string, other *Endpoint, ip netip.Addr, dst *Endpoint, port uint16, proto Protocol) bool {
	if len(r.ports) > 0 {
		ok := false
		for i := range r.ports {
			if r.ports[i].matches(port, proto, dst) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(r.peers) == 0 {
		return true
	}
	for i := range r.peers {
		if s.peerMatches(&r.peers[i], policyNS, other, ip) {
			return true
		}
	}
	return false
}

func (s *Set) peerMatches(p *peer, policyNS string, e *Endpoint, ip netip.Addr) bool {
	if p.block != nil {
		return p.block.contains(ip)
	}
	if e == nil {
		return false // selectors only ever select endpoints
	}
	ns := namespaceOr(e.Namespace)
	if p.namespaces == nil {
		if ns != policyNS {
			return false // a podSelector alone selects in the policy's namespace
		}
	} else if !p.namespaces.Matches(s.namespaceLabels(ns)) {
		return false
	}
	return p.pods == nil || p.pods.Matches(labels.Set(e.Labels))
}

// namespaceLabels is the labels of namespace ns; one Compile was not
// told about has its name label only.
func (s *Set) namespaceLabels(ns string) labels.Labels {
	if l, ok := s.ns[ns]; ok {
		return l
	}
	return nameOnly(ns)
}

// nameOnly is the labels of a namespace Compile was not told about.
type nameOnly string

func (n nameOnly) Has(k string) bool { return k == corev1.LabelMetadataName }

func (n nameOnly) Get(k string) string {
	v, _ := n.Lookup(k)
	return v
}

func (n nameOnly) Lookup(k string) (string, bool) {
	if k == corev1.LabelMetadataName {
		return string(n), true
	}
	return "", false
}

func (b *block) contains(ip netip.Addr) bool {
	if !b.cidr.Contains(ip) {
		return false
	}
	for _, e := range b.except {
		if e.Contains(ip) {
			return false
		}
	}
	return true
}

func (p *port) matches(n uint16, proto Protocol, dst *Endpoint) bool {
	if p.proto != proto {
		return false
	}
	if p.name != "" {
		if dst == nil {
			return false // nothing to resolve the name on
		}
		for _, np := range dst.Ports {
			if np.Name == p.name && np.Port == n && protocolOr(np.Protocol) == p.proto {
				return true
			}
		}
		return false
	}
	return p.lo == 0 || (p.lo <= n && n <= p.hi)
}

func protocolOr(p Protocol) Protocol {
	if p == "" {
		return ProtocolTCP
	}
	return p
}

// Explain renders d as a few lines for people (slimctl policy explain):
// "allowed" or "denied", then one line per direction, such as
//
//	egress of x/a: not isolated (no policy selects it for egress)
//	ingress of y/b: isolated by y/deny-all, y/allow-x; allowed by y/allow-x ingress[0]
//
// or "...; no rule allows it". src and dst name the two sides.
func (d Decision) Explain(src, dst string) string {
	var b strings.Builder
	if d.Allowed {
		b.WriteString("allowed\n")
	} else {
		b.WriteString("denied\n")
	}
	explain(&b, "egress", src, d.Egress)
	explain(&b, "ingress", dst, d.Ingress)
	return b.String()
}

func explain(b *strings.Builder, dir, who string, v Verdict) {
	fmt.Fprintf(b, "%s of %s: ", dir, who)
	if !v.Isolated {
		fmt.Fprintf(b, "not isolated (no policy selects it for %s)\n", dir)
		return
	}
	fmt.Fprintf(b, "isolated by %s; ", strings.Join(v.Selecting, ", "))
	if len(v.AllowedBy) == 0 {
		b.WriteString("no rule allows it\n")
		return
	}
	b.WriteString("allowed by ")
	for i, r := range v.AllowedBy {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.String())
	}
	b.WriteString("\n")
}
