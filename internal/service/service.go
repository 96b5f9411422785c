// Package service reads and indexes Kubernetes Services (v1, type
// ClusterIP) for Slim's connect-time load balancing: a connect to a
// service's virtual IP and port goes to one of its backends, the
// endpoints its selector matches, on their target port. This package is
// pure: parsing, validation and the index from service ports to backends;
// the store allocates virtual IPs and the daemon picks among the backends
// that have a published listener.
package service

import (
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/manifest"
)

var serviceKind = manifest.Kind[corev1.Service, corev1.ServiceList]{
	APIVersion: "v1", Kind: "Service", ListKind: "ServiceList", Noun: "service",
	Items:  func(l *corev1.ServiceList) []corev1.Service { return l.Items },
	Meta:   func(s *corev1.Service) *metav1.TypeMeta { return &s.TypeMeta },
	Name:   Key,
	Finish: finish,
}

// Parse reads Service objects from YAML or JSON (one object, a "---"
// stream, a v1 List or a ServiceList), strictly (see package manifest). A
// service without a namespace gets "default"; each is Validated.
func Parse(data []byte) ([]corev1.Service, error) { return serviceKind.Parse(data) }

func finish(s *corev1.Service) error {
	if s.Namespace == "" {
		s.Namespace = api.DefaultNamespace
	}
	return Validate(s)
}

// AnnotationBackendRemoval says what happens to a service's live
// connections whose backend leaves it (its container deleted, its labels
// changed, its listener closed): "keep" (the default, as kube-proxy and
// Cilium do) leaves them alone; "reset" cuts them on the clients' hosts.
const AnnotationBackendRemoval = "slim.io/backend-removal"

// ResetsOnRemoval reports whether s asks for its connections to a removed
// backend to be cut.
func ResetsOnRemoval(s *corev1.Service) bool {
	return s.Annotations[AnnotationBackendRemoval] == "reset"
}

// Key is a service's namespace/name.
func Key(s *corev1.Service) string {
	ns := s.Namespace
	if ns == "" {
		ns = api.DefaultNamespace
	}
	return ns + "/" + s.Name
}

// Validate checks that s is a service Slim serves: type ClusterIP (or
// unset), a single IPv4 cluster IP or none yet (the store allocates one),
// a selector, and TCP or UDP ports with unique names and port numbers.
// Errors name the field.
func Validate(s *corev1.Service) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	for _, m := range validation.IsDNS1035Label(s.Name) {
		bad("metadata.name", "%q: %s", s.Name, m)
	}
	if err := api.ValidateNamespace(s.Namespace); err != nil {
		bad("metadata.namespace", "%v", err)
	}
	switch v := s.Annotations[AnnotationBackendRemoval]; v {
	case "", "keep", "reset":
	default:
		bad("metadata.annotations["+AnnotationBackendRemoval+"]", "%q: want keep or reset", v)
	}
	sp := &s.Spec
	switch sp.Type {
	case "", corev1.ServiceTypeClusterIP:
	default:
		bad("spec.type", "%q: only ClusterIP services are supported", sp.Type)
	}
	switch {
	case sp.ClusterIP == corev1.ClusterIPNone:
		bad("spec.clusterIP", "None (a headless service) is not supported: it needs DNS, not a virtual IP")
	case sp.ClusterIP != "":
		if a, err := netip.ParseAddr(sp.ClusterIP); err != nil || !a.Is4() {
			bad("spec.clusterIP", "%q: want an IPv4 address", sp.ClusterIP)
		}
	}
	if len(sp.ClusterIPs) > 1 || (len(sp.ClusterIPs) == 1 && sp.ClusterIPs[0] != sp.ClusterIP) {
		bad("spec.clusterIPs", "%q: want at most one, equal to spec.clusterIP", sp.ClusterIPs)
	}
	if len(sp.Selector) == 0 {
		bad("spec.selector", "required: a service without a selector (endpoints managed by hand) is not supported")
	} else if err := api.ValidateLabels(sp.Selector); err != nil {
		bad("spec.selector", "%v", err)
	}
	if sp.ExternalName != "" || len(sp.ExternalIPs) > 0 || sp.LoadBalancerIP != "" {
		bad("spec", "externalName, externalIPs and loadBalancerIP are not supported")
	}
	if len(sp.Ports) == 0 {
		bad("spec.ports", "required: at least one port")
	}
	names, fronts := map[string]bool{}, map[string]bool{}
	for i, p := range sp.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if len(sp.Ports) > 1 && p.Name == "" {
			bad(f+".name", "required when a service has more than one port")
		}
		if p.Name != "" {
			for _, m := range validation.IsDNS1123Label(p.Name) {
				bad(f+".name", "%q: %s", p.Name, m)
			}
			if names[p.Name] {
				bad(f+".name", "%q given twice", p.Name)
			}
			names[p.Name] = true
		}
		if p.Port < 1 || p.Port > 65535 {
			bad(f+".port", "%d: want 1-65535", p.Port)
		}
		proto := Protocol(p.Protocol)
		switch proto {
		case corev1.ProtocolTCP, corev1.ProtocolUDP:
		default:
			bad(f+".protocol", "%q: want TCP or UDP", p.Protocol)
		}
		if k := fmt.Sprintf("%d/%s", p.Port, proto); fronts[k] {
			bad(f+".port", "%s given twice", k)
		} else {
			fronts[k] = true
		}
		switch tp := p.TargetPort; {
		case tp.Type == intstr.Int && tp.IntVal == 0:
			// Unset: the port itself.
		case tp.Type == intstr.Int && (tp.IntVal < 1 || tp.IntVal > 65535):
			bad(f+".targetPort", "%d: want 1-65535 or a port name", tp.IntVal)
		case tp.Type == intstr.String:
			for _, m := range validation.IsValidPortName(tp.StrVal) {
				bad(f+".targetPort", "%q: %s", tp.StrVal, m)
			}
		}
		if p.NodePort != 0 {
			bad(f+".nodePort", "not supported (ClusterIP only)")
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("service %s: %w", Key(s), errors.Join(errs...))
	}
	return nil
}

// Protocol is a port's protocol, TCP when unset (as the API server
// defaults it).
func Protocol(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}
