package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Protocol is a transport protocol as policies name it.
type Protocol string

// The protocols a policy port can name.
const (
	ProtocolTCP  Protocol = "TCP"
	ProtocolUDP  Protocol = "UDP"
	ProtocolSCTP Protocol = "SCTP"
)

// ipProtocols are the IP protocol numbers of the protocols policies name.
var ipProtocols = map[Protocol]uint8{ProtocolTCP: 6, ProtocolUDP: 17, ProtocolSCTP: 132}

// Number is p's IP protocol number, for packet filters and conntrack.
func (p Protocol) Number() (uint8, bool) {
	n, ok := ipProtocols[p]
	return n, ok
}

// ProtocolOf names IP protocol number n: "" for one policies do not name,
// which only a rule without ports allows.
func ProtocolOf(n uint8) Protocol {
	for p, m := range ipProtocols {
		if m == n {
			return p
		}
	}
	return ""
}

// Namespace is a namespace and its labels. Compile always sets
// kubernetes.io/metadata.name to Name, whatever Labels hold, as the API
// server does; a namespace not given to Compile has that label only.
type Namespace struct {
	Name   string // "" is DefaultNamespace
	Labels map[string]string
}

// NamedPort is a port an endpoint names (a containerPort name in
// Kubernetes); rules naming a port are resolved against these.
type NamedPort struct {
	Name     string
	Port     uint16
	Protocol Protocol // "" is TCP, as for a containerPort
}

// Endpoint is a container the cluster knows.
type Endpoint struct {
	Namespace string // "" is DefaultNamespace
	Labels    map[string]string
	// Ports resolve named ports in rules. Only the destination endpoint's
	// ports are used, for ingress and egress rules alike.
	Ports []NamedPort
}

// Peer is one side of a connection: an address, and the endpoint that owns
// it; a nil Endpoint is outside the cluster, matched only by ipBlock.
type Peer struct {
	IP       netip.Addr
	Endpoint *Endpoint
}

// Set is a compiled, immutable set of policies with the namespaces'
// labels, safe for concurrent use. The zero of *Set (nil) has no policies.
type Set struct {
	byNS map[string][]*compiled // by the policies' namespace, sorted by name
	ns   map[string]labels.Set  // namespace labels, with metadata.name
}

// compiled is one policy, with selectors and addresses parsed once so
// Decide only matches.
type compiled struct {
	name             string // "namespace/name"
	namespace        string
	selector         labels.Selector
	ingress, egress  bool // the directions it isolates
	inRules, egRules []rule
}

// rule is one ingress or egress rule: it matches when a peer and a port
// match; no peers matches every peer, no ports every port and protocol.
type rule struct {
	peers []peer
	ports []port
}

// peer is one from/to entry: an ipBlock, or pod and/or namespace
// selectors (a nil selector is an absent one).
type peer struct {
	block      *block
	pods       labels.Selector
	namespaces labels.Selector
}

type block struct {
	cidr   netip.Prefix
	except []netip.Prefix
}

// port is one rule port: any port of proto (lo == 0 and name == ""), the
// range lo-hi, or a port name resolved on the destination.
type port struct {
	proto  Protocol
	lo, hi uint16
	name   string
}

// Compile validates the policies and compiles them with the namespaces'
// labels. It keeps no reference to its arguments. Two policies with the
// same namespace and name, or two namespaces with the same name, are an
// error.
func Compile(policies []networkingv1.NetworkPolicy, namespaces []Namespace) (*Set, error) {
	s := &Set{byNS: map[string][]*compiled{}, ns: make(map[string]labels.Set, len(namespaces))}
	for _, n := range namespaces {
		name := namespaceOr(n.Name)
		if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
			return nil, fmt.Errorf("namespace %q: %s", name, strings.Join(msgs, "; "))
		}
		if _, dup := s.ns[name]; dup {
			return nil, fmt.Errorf("namespace %s given twice", name)
		}
		l := make(labels.Set, len(n.Labels)+1)
		for k, v := range n.Labels {
			l[k] = v
		}
		l[corev1.LabelMetadataName] = name
		s.ns[name] = l
	}
	seen := make(map[string]bool, len(policies))
	for i := range policies {
		p := &policies[i]
		if err := Validate(p); err != nil {
			return nil, err
		}
		c, err := compile(p)
		if err != nil {
			return nil, err
		}
		if seen[c.name] {
			return nil, fmt.Errorf("policy %s given twice", c.name)
		}
		seen[c.name] = true
		s.byNS[c.namespace] = append(s.byNS[c.namespace], c)
	}
	for _, cs := range s.byNS {
		slices.SortFunc(cs, func(a, b *compiled) int { return strings.Compare(a.name, b.name) })
	}
	return s, nil
}

// compile compiles a validated policy; its errors are only those
// validation lets through, which would be bugs.
func compile(p *networkingv1.NetworkPolicy) (*compiled, error) {
	c := &compiled{name: key(p), namespace: namespaceOr(p.Namespace)}
	c.ingress, c.egress = directions(&p.Spec)
	var err error
	if c.selector, err = metav1.LabelSelectorAsSelector(&p.Spec.PodSelector); err != nil {
		return nil, fmt.Errorf("policy %s: spec.podSelector: %w", c.name, err)
	}
	for i := range p.Spec.Ingress {
		r, err := compileRule(p.Spec.Ingress[i].From, p.Spec.Ingress[i].Ports)
		if err != nil {
			return nil, fmt.Errorf("policy %s: spec.ingress[%d]: %w", c.name, i, err)
		}
		c.inRules = append(c.inRules, r)
	}
	for i := range p.Spec.Egress {
		r, err := compileRule(p.Spec.Egress[i].To, p.Spec.Egress[i].Ports)
		if err != nil {
			return nil, fmt.Errorf("policy %s: spec.egress[%d]: %w", c.name, i, err)
		}
		c.egRules = append(c.egRules, r)
	}
	return c, nil
}

func compileRule(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) (rule, error) {
	var r rule
	for _, p := range peers {
		var cp peer
		var err error
		if p.IPBlock != nil {
			b := &block{}
			if b.cidr, err = netip.ParsePrefix(p.IPBlock.CIDR); err != nil {
				return r, err
			}
			b.cidr = b.cidr.Masked()
			for _, e := range p.IPBlock.Except {
				ex, err := netip.ParsePrefix(e)
				if err != nil {
					return r, err
				}
				b.except = append(b.except, ex.Masked())
			}
			cp.block = b
		}
		if p.PodSelector != nil {
			if cp.pods, err = metav1.LabelSelectorAsSelector(p.PodSelector); err != nil {
				return r, err
			}
		}
		if p.NamespaceSelector != nil {
			if cp.namespaces, err = metav1.LabelSelectorAsSelector(p.NamespaceSelector); err != nil {
				return r, err
			}
		}
		r.peers = append(r.peers, cp)
	}
	for _, p := range ports {
		cp := port{proto: ProtocolTCP}
		if p.Protocol != nil {
			cp.proto = Protocol(*p.Protocol)
		}
		switch {
		case p.Port == nil:
		case p.Port.Type == intstr.String:
			cp.name = p.Port.StrVal
		default:
			// Validated: 1-65535, endPort >= port.
			cp.lo, cp.hi = uint16(p.Port.IntVal), uint16(p.Port.IntVal)
			if p.EndPort != nil {
				cp.hi = uint16(*p.EndPort)
			}
		}
		r.ports = append(r.ports, cp)
	}
	return r, nil
}
