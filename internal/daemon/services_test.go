package daemon

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/service"
)

// pick spreads over the backends that listen, leaves out those that do
// not, and tells a service port without any from no service at all.
func TestServicePick(t *testing.T) {
	svc := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	ep := func(ip string) api.Endpoint {
		return api.Endpoint{IPv4: netip.MustParseAddr(ip), Labels: map[string]string{"app": "web"}}
	}
	s := &services{}
	s.table.Store(service.Build([]corev1.Service{svc}, []api.Endpoint{ep("10.244.1.2"), ep("10.244.1.3"), ep("10.244.2.2")}))
	listening := map[netip.Addr]bool{netip.MustParseAddr("10.244.1.2"): true, netip.MustParseAddr("10.244.2.2"): true}
	listener := func(a netip.Addr, p uint16) (api.Listener, bool) {
		return api.Listener{VIP: a, Port: p}, listening[a] && p == 8080
	}
	vip := netip.MustParseAddr("10.96.0.10")
	got := map[netip.Addr]int{}
	for range 2000 {
		l, ok, is := s.pick(vip, 80, listener)
		if !ok || !is || l.Port != 8080 {
			t.Fatalf("pick: %+v %v %v", l, ok, is)
		}
		got[l.VIP]++
	}
	if len(got) != 2 || got[netip.MustParseAddr("10.244.1.3")] != 0 {
		t.Errorf("picks %v: want the two listening backends only", got)
	}
	for a, n := range got {
		if n < 850 || n > 1150 {
			t.Errorf("backend %v picked %d of 2000 times, want about 1000", a, n)
		}
	}
	clear(listening)
	if _, ok, is := s.pick(vip, 80, listener); ok || !is {
		t.Errorf("no backend listening: ok %v, isService %v; want false, true", ok, is)
	}
	if _, _, is := s.pick(vip, 81, listener); is {
		t.Error("port 81 is no service port")
	}
}

// stale: a connection through a resetting service is cut once its backend
// leaves the service or stops listening, never through another service.
func TestServiceStale(t *testing.T) {
	mk := func(name, ip string, reset bool) corev1.Service {
		s := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: ip, Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
		if reset {
			s.Annotations = map[string]string{service.AnnotationBackendRemoval: "reset"}
		}
		return s
	}
	s := &services{}
	backend := netip.MustParseAddrPort("10.244.1.2:8080")
	build := func(eps ...api.Endpoint) {
		s.table.Store(service.Build([]corev1.Service{mk("r", "10.96.0.1", true), mk("k", "10.96.0.2", false)}, eps))
	}
	build(api.Endpoint{IPv4: backend.Addr(), Labels: map[string]string{"app": "web"}})
	listening := true
	listener := func(netip.Addr, uint16) (api.Listener, bool) { return api.Listener{}, listening }
	r, k := netip.MustParseAddrPort("10.96.0.1:80"), netip.MustParseAddrPort("10.96.0.2:80")
	if !s.resetting() {
		t.Fatal("resetting: false with a reset service")
	}
	if _, stale := s.stale(r, backend, listener); stale {
		t.Error("a backend still in the service and listening: stale")
	}
	listening = false
	if svc, stale := s.stale(r, backend, listener); !stale || svc != "default/r" {
		t.Errorf("the listener closed: %q %v, want default/r stale", svc, stale)
	}
	listening = true
	build() // the backend left
	if _, stale := s.stale(r, backend, listener); !stale {
		t.Error("the backend left: not stale")
	}
	if _, stale := s.stale(k, backend, listener); stale {
		t.Error("through a keep service: stale")
	}
}
