package service

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/slimnet/slim/internal/api"
)

// Front is a service port as clients dial it.
type Front struct {
	VIP      netip.Addr
	Port     uint16
	Protocol corev1.Protocol
}

// Port is one service port and its backends: the matching endpoints'
// addresses with the target port, sorted.
type Port struct {
	Service  string // namespace/name
	Name     string
	Backends []netip.AddrPort
	// Reset: connections to a backend that leaves are cut
	// (AnnotationBackendRemoval).
	Reset bool
}

// Table maps the fronts of services to their ports. It is built whole and
// never changed: share it freely.
type Table struct {
	fronts map[Front]*Port
	reset  bool
}

// Build indexes svcs over eps. A service without a cluster IP (not
// allocated yet) has no front. A backend is an endpoint of the service's
// namespace whose pod labels match the selector, on the target port: a
// number, or a name resolved in the endpoint's named ports with the
// port's protocol (an endpoint without that name is no backend of that
// port, as in Kubernetes).
func Build(svcs []corev1.Service, eps []api.Endpoint) *Table {
	t := &Table{fronts: map[Front]*Port{}}
	for i := range svcs {
		s := &svcs[i]
		vip, err := netip.ParseAddr(s.Spec.ClusterIP)
		if err != nil {
			continue
		}
		var members []api.Endpoint
		for _, ep := range eps {
			if ep.IPv4.IsValid() && ep.Namespace() == s.Namespace && matches(s.Spec.Selector, ep.PodLabels()) {
				members = append(members, ep)
			}
		}
		for _, p := range s.Spec.Ports {
			proto := Protocol(p.Protocol)
			port := &Port{Service: Key(s), Name: p.Name, Reset: ResetsOnRemoval(s)}
			t.reset = t.reset || port.Reset
			for _, ep := range members {
				if tp, ok := targetPort(p, proto, ep); ok {
					port.Backends = append(port.Backends, netip.AddrPortFrom(ep.IPv4, tp))
				}
			}
			slices.SortFunc(port.Backends, netip.AddrPort.Compare)
			t.fronts[Front{vip, uint16(p.Port), proto}] = port
		}
	}
	return t
}

// Lookup returns the service port at f, if a service has it.
func (t *Table) Lookup(f Front) (*Port, bool) {
	p, ok := t.fronts[f]
	return p, ok
}

// Resets reports whether some service port asks for its connections to a
// removed backend to be cut (AnnotationBackendRemoval).
func (t *Table) Resets() bool { return t.reset }

// Fronts lists every front, sorted by address, port and protocol.
func (t *Table) Fronts() []Front {
	return slices.SortedFunc(maps.Keys(t.fronts), func(a, b Front) int {
		if c := a.VIP.Compare(b.VIP); c != 0 {
			return c
		}
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return cmp.Compare(a.Protocol, b.Protocol)
	})
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if l, ok := labels[k]; !ok || l != v {
			return false
		}
	}
	return true
}

// targetPort resolves p's target port on ep.
func targetPort(p corev1.ServicePort, proto corev1.Protocol, ep api.Endpoint) (uint16, bool) {
	switch tp := p.TargetPort; {
	case tp.Type == intstr.String:
		for _, np := range ep.Ports {
			if np.Name == tp.StrVal && corev1.Protocol(np.Protocol) == proto {
				return np.Port, true
			}
		}
		return 0, false
	case tp.IntVal == 0:
		return uint16(p.Port), true
	default:
		return uint16(tp.IntVal), true
	}
}
