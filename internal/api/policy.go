package api

import (
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The labels through which Kubernetes runtimes pass a pod's identity (CNI
// sets them from K8S_POD_NAME and K8S_POD_NAMESPACE in CNI_ARGS). The
// namespace label is the endpoint's namespace for network policy; neither
// is one of the pod's own labels, so policies do not select on them.
const (
	LabelPodName      = "io.kubernetes.pod.name"
	LabelPodNamespace = "io.kubernetes.pod.namespace"
)

// AnnotationSource names who wrote a policy or a service, when it was not
// an operator: SourceKubernetes for the NetworkPolicies and Services
// slimd mirrors from the API server, which it alone then replaces or
// deletes.
const (
	AnnotationSource = "slim.io/source"
	SourceKubernetes = "kubernetes"
)

// DefaultNamespace is the namespace of an endpoint that names none.
const DefaultNamespace = "default"

// Namespace returns the endpoint's namespace for network policy.
func (e Endpoint) Namespace() string {
	if ns := e.Labels[LabelPodNamespace]; ns != "" {
		return ns
	}
	return DefaultNamespace
}

// PodLabels returns the labels policies select on: the endpoint's labels
// without the runtime's pod identity.
func (e Endpoint) PodLabels() map[string]string {
	out := make(map[string]string, len(e.Labels))
	for k, v := range e.Labels {
		if k != LabelPodName && k != LabelPodNamespace {
			out[k] = v
		}
	}
	return out
}

// NamedPort is a port an endpoint serves under a name (a container port's
// name in Kubernetes); network policies may name it.
type NamedPort struct {
	Name     string `json:"name"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"` // TCP, UDP or SCTP
}

// ValidatePorts checks an endpoint's named ports: valid names, used once
// per protocol, ports 1-65535, protocols TCP, UDP or SCTP.
func ValidatePorts(ports []NamedPort) error {
	if len(ports) > 64 {
		return fmt.Errorf("%d named ports: at most 64 allowed", len(ports))
	}
	seen := map[string]bool{}
	for _, p := range ports {
		// An IANA service name, as Kubernetes port names are.
		if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
			return fmt.Errorf("invalid port name %q: %s", p.Name, strings.Join(errs, "; "))
		}
		switch p.Protocol {
		case "TCP", "UDP", "SCTP":
		default:
			return fmt.Errorf("port %s: protocol %q: want TCP, UDP or SCTP", p.Name, p.Protocol)
		}
		if p.Port == 0 {
			return fmt.Errorf("port %s: port 0", p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("port name %q used twice", p.Name)
		}
		seen[p.Name] = true
	}
	return nil
}

// ParseNamedPort reads NAME=PORT[/PROTO] (protocol TCP unless given, in
// any case), the form slimctl and the CNI configuration take.
func ParseNamedPort(s string) (NamedPort, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return NamedPort{}, fmt.Errorf("port %q: want NAME=PORT[/PROTO]", s)
	}
	num, proto, slash := strings.Cut(rest, "/")
	p := NamedPort{Name: name, Protocol: "TCP"}
	if slash {
		p.Protocol = strings.ToUpper(proto)
	}
	var n int
	if _, err := fmt.Sscanf(num, "%d", &n); err != nil || n < 1 || n > 65535 || fmt.Sprint(n) != num {
		return NamedPort{}, fmt.Errorf("port %q: %q is not a port number 1-65535", s, num)
	}
	p.Port = uint16(n)
	if err := ValidatePorts([]NamedPort{p}); err != nil {
		return NamedPort{}, err
	}
	return p, nil
}

// Namespace is a namespace's labels, which namespace selectors of network
// policies match. kubernetes.io/metadata.name is always set to the name.
type Namespace struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// LabelNamespaceName is the label every namespace carries with its name.
const LabelNamespaceName = "kubernetes.io/metadata.name"

// ValidateNamespace checks a namespace name.
func ValidateNamespace(name string) error {
	// A DNS-1123 label, as Kubernetes namespace names are.
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("invalid namespace %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// Validate checks a namespace and its labels; the name label, if given,
// must agree with the name.
func (n Namespace) Validate() error {
	if err := ValidateNamespace(n.Name); err != nil {
		return err
	}
	if v, ok := n.Labels[LabelNamespaceName]; ok && v != n.Name {
		return fmt.Errorf("namespace %s: label %s=%s: it is always the namespace's name", n.Name, LabelNamespaceName, v)
	}
	return ValidateLabels(n.Labels)
}

// LabelChange asks to change an object's labels (a namespace's, an
// endpoint's): Set are added or replaced, Remove are removed.
type LabelChange struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// Apply returns a copy of labels with the change made (never nil; labels
// is not written: shared label maps are read-only).
func (c LabelChange) Apply(labels map[string]string) map[string]string {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, c.Set)
	for _, k := range c.Remove {
		delete(out, k)
	}
	return out
}

// NamespaceLabels is a namespace's label change.
type NamespaceLabels = LabelChange

// Policies is a list of network policies (networking.k8s.io/v1), as
// applied and listed.
type Policies struct {
	Policies []networkingv1.NetworkPolicy `json:"policies"`
}

// PolicyExplanation is the answer of the policy explain call: whether a
// connection would be allowed, the rules that decide, in words.
type PolicyExplanation struct {
	Allowed     bool     `json:"allowed"`
	Explanation string   `json:"explanation"`
	AllowedBy   []string `json:"allowedBy,omitempty"`
}

// Denial is one connect network policy refused on this host (the fast
// path's; the overlay's are drops in the packet filter, counted there).
type Denial struct {
	Time        time.Time      `json:"time"`
	Source      netip.Addr     `json:"source"`
	Destination netip.AddrPort `json:"destination"`
	// Direction is the side that denied: egress (the client's policies)
	// or ingress (the server's); Policy the first policy isolating it.
	Direction string `json:"direction"`
	Policy    string `json:"policy"`
}
