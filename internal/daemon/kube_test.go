package daemon

import (
	"errors"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/poll"
)

// The live host with the lowest name leads; the policy calls go through
// the store and return once the cache has them.
func TestKubeTarget(t *testing.T) {
	e := newFPEnv(t)
	ctx := t.Context()
	pols, svcs := e.st.PolicyCache(slog.New(slog.DiscardHandler), nil), e.st.ServiceCache(slog.New(slog.DiscardHandler), nil)
	go pols.Run(ctx)
	go svcs.Run(ctx)
	d := &Daemon{cfg: Config{NodeName: "h1", ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16")}, store: e.st, hosts: e.v.hosts, pols: pols, svcs: svcs}
	kt := kubeTarget{d}
	if !kt.Leader() {
		t.Fatal("h1 alone does not lead")
	}
	// h0 joins: it leads; when its lease goes, h1 leads again.
	g, err := e.cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	h0 := api.Host{Name: "h0", UnderlayIP: netip.MustParseAddr("192.168.77.9"), Subnet4: netip.MustParsePrefix("10.244.9.0/24"), VTEPMAC: "02:00:00:00:00:09"}
	if err := e.st.PutHost(ctx, h0, g.ID); err != nil {
		t.Fatal(err)
	}
	leads := func(want bool) {
		t.Helper()
		poll.Until(t, 5*time.Second, func() error {
			if kt.Leader() != want {
				return errors.New("leadership not as expected yet")
			}
			return nil
		})
	}
	leads(false)
	if _, err := e.cli.Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	leads(true)

	p := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "web",
		Annotations: map[string]string{api.AnnotationSource: api.SourceKubernetes}}}
	if err := kt.PutPolicies(ctx, []networkingv1.NetworkPolicy{p}); err != nil {
		t.Fatal(err)
	}
	// Returned once cached: the next pass sees what it wrote.
	if ps := kt.Policies(); len(ps) != 1 || ps[0].Annotations[api.AnnotationSource] != api.SourceKubernetes {
		t.Fatalf("policies after put: %+v", ps)
	}
	for range 2 { // deleting what is gone is no error
		if err := kt.DeletePolicy(ctx, "x", "web"); err != nil {
			t.Fatal(err)
		}
	}
	if ps := kt.Policies(); len(ps) != 0 {
		t.Fatalf("policies after delete: %+v", ps)
	}

	svc := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "web",
		Annotations: map[string]string{api.AnnotationSource: api.SourceKubernetes}},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80}}}}
	if err := kt.PutService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if ss := kt.Services(); len(ss) != 1 || ss[0].Spec.ClusterIP != "10.96.0.10" || ss[0].Annotations[api.AnnotationSource] != api.SourceKubernetes {
		t.Fatalf("services after put: %+v", ss)
	}
	for range 2 {
		if err := kt.DeleteService(ctx, "x", "web"); err != nil {
			t.Fatal(err)
		}
	}
	if ss := kt.Services(); len(ss) != 0 {
		t.Fatalf("services after delete: %+v", ss)
	}
}
