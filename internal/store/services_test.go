package store

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestServices(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	cidr := netip.MustParsePrefix("10.96.0.0/30") // two usable addresses
	svc := func(name, ip string) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: ip, Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Port: 80}}}}
	}
	a, rev, err := s.PutService(ctx, svc("a", ""), cidr)
	if err != nil || a.Spec.ClusterIP != "10.96.0.1" || rev == 0 {
		t.Fatalf("first service: %v, %v (rev %d), want 10.96.0.1", a.Spec.ClusterIP, err, rev)
	}
	// Applied again without a cluster IP: it keeps its own.
	if again, _, err := s.PutService(ctx, svc("a", ""), cidr); err != nil || again.Spec.ClusterIP != "10.96.0.1" {
		t.Errorf("re-apply: %v, %v", again.Spec.ClusterIP, err)
	}
	for _, tc := range []struct {
		svc  corev1.Service
		want string
	}{
		{svc("b", "10.96.0.1"), "allocated to service default/a"},
		{svc("b", "10.97.0.1"), "outside the service CIDR"},
		{svc("a", "10.96.0.2"), "cannot change"},
		{svc("b", "10.96.0.0"), "outside the service CIDR"}, // the network address
	} {
		if _, _, err := s.PutService(ctx, tc.svc, cidr); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: %v, want ErrInvalid with %q", tc.svc.Name, tc.svc.Spec.ClusterIP, err, tc.want)
		}
	}
	b, _, err := s.PutService(ctx, svc("b", ""), cidr)
	if err != nil || b.Spec.ClusterIP != "10.96.0.2" {
		t.Fatalf("second service: %v, %v", b.Spec.ClusterIP, err)
	}
	if _, _, err := s.PutService(ctx, svc("c", ""), cidr); !errors.Is(err, ErrExhausted) {
		t.Errorf("third service in a /30: %v, want ErrExhausted", err)
	}
	if _, err := s.DeleteService(ctx, "default", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteService(ctx, "default", "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	c, _, err := s.PutService(ctx, svc("c", ""), cidr)
	if err != nil || c.Spec.ClusterIP != "10.96.0.1" {
		t.Errorf("after a's delete: %v, %v, want a's freed 10.96.0.1", c.Spec.ClusterIP, err)
	}
	if _, _, err := s.PutService(ctx, corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bad"}}, cidr); !errors.Is(err, ErrInvalid) {
		t.Errorf("invalid service: %v", err)
	}

	// Several at once, all or nothing: a conflict in the last one leaves
	// the first unwritten; two new ones get two addresses.
	wide := netip.MustParsePrefix("10.97.0.0/24")
	if _, _, err := s.PutServices(ctx, []corev1.Service{svc("d", ""), svc("e", "10.96.0.2")}, netip.MustParsePrefix("10.96.0.0/24")); !errors.Is(err, ErrInvalid) {
		t.Errorf("apply with a taken cluster IP: %v", err)
	}
	if _, err := s.DeleteService(ctx, "default", "d"); !errors.Is(err, ErrNotFound) {
		t.Errorf("d was written by a refused apply: %v", err)
	}
	got, _, err := s.PutServices(ctx, []corev1.Service{svc("f", ""), svc("g", "")}, wide)
	if err != nil || len(got) != 2 || got[0].Spec.ClusterIP == got[1].Spec.ClusterIP {
		t.Errorf("two new services at once: %v, %v", got, err)
	}
	if _, _, err := s.PutServices(ctx, []corev1.Service{svc("h", "10.97.0.9"), svc("i", "10.97.0.9")}, wide); !errors.Is(err, ErrInvalid) {
		t.Errorf("two services asking for one cluster IP: %v", err)
	}
}
