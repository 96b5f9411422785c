package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
)

// fakeTarget is Slim's side in memory: the node's endpoints and the
// namespaces' labels, changed as the store would change them.
type fakeTarget struct {
	mu       sync.Mutex
	eps      []api.Endpoint
	nss      map[string]map[string]string
	pols     map[string]networkingv1.NetworkPolicy
	svcs     map[string]corev1.Service
	follower bool
	writes   int
	fail     bool
}

func (f *fakeTarget) Leader() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.follower
}

func (f *fakeTarget) Policies() []networkingv1.NetworkPolicy {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []networkingv1.NetworkPolicy
	for _, p := range f.pols {
		out = append(out, *p.DeepCopy())
	}
	return out
}

// PutPolicies stores what a JSON round trip gives, as the store does:
// empty lists come back nil.
func (f *fakeTarget) PutPolicies(_ context.Context, ps []networkingv1.NetworkPolicy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(ps) > MaxPolicyBatch {
		return fmt.Errorf("%d policies in one batch", len(ps))
	}
	f.writes++
	for _, p := range ps {
		q, err := roundTrip(p)
		if err != nil {
			return err
		}
		if f.pols == nil {
			f.pols = map[string]networkingv1.NetworkPolicy{}
		}
		f.pols[q.Namespace+"/"+q.Name] = q
	}
	return nil
}

// roundTrip is v as the store gives it back: through JSON.
func roundTrip[T any](v T) (T, error) {
	var out T
	b, err := json.Marshal(v)
	if err != nil {
		return out, err
	}
	err = json.Unmarshal(b, &out)
	return out, err
}

func (f *fakeTarget) DeletePolicy(_ context.Context, ns, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	delete(f.pols, ns+"/"+name)
	return nil
}

func (f *fakeTarget) Services() []corev1.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []corev1.Service
	for _, s := range f.svcs {
		out = append(out, *s.DeepCopy())
	}
	return out
}

func (f *fakeTarget) ServiceCIDR() netip.Prefix { return netip.MustParsePrefix("10.96.0.0/16") }

// PutService refuses a new cluster IP for a service that has one, as the
// store does, and keeps a JSON round trip of what it is given.
func (f *fakeTarget) PutService(_ context.Context, svc corev1.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	key := svc.Namespace + "/" + svc.Name
	if h, ok := f.svcs[key]; ok && h.Spec.ClusterIP != svc.Spec.ClusterIP {
		return fmt.Errorf("service %s has cluster IP %s", key, h.Spec.ClusterIP)
	}
	q, err := roundTrip(svc)
	if err != nil {
		return err
	}
	if f.svcs == nil {
		f.svcs = map[string]corev1.Service{}
	}
	f.svcs[key] = q
	return nil
}

func (f *fakeTarget) DeleteService(_ context.Context, ns, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	delete(f.svcs, ns+"/"+name)
	return nil
}

func (f *fakeTarget) service(key string) (corev1.Service, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.svcs[key]
	return s, ok
}

func (f *fakeTarget) policy(key string) (networkingv1.NetworkPolicy, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pols[key]
	return p, ok
}

func (f *fakeTarget) Endpoints() []api.Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]api.Endpoint, len(f.eps))
	for i, ep := range f.eps {
		ep.Labels = maps.Clone(ep.Labels)
		out[i] = ep
	}
	return out
}

func (f *fakeTarget) LabelEndpoint(_ context.Context, a api.Attachment, c api.LabelChange) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return context.DeadlineExceeded
	}
	f.writes++
	for i := range f.eps {
		if f.eps[i].ContainerID == a.ContainerID && f.eps[i].IfName == a.IfName {
			f.eps[i].Labels = c.Apply(f.eps[i].Labels)
		}
	}
	return nil
}

func (f *fakeTarget) NamespaceLabels(name string) (map[string]string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.nss[name]
	return maps.Clone(l), ok
}

func (f *fakeTarget) LabelNamespace(_ context.Context, name string, c api.LabelChange) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	f.nss[name] = c.Apply(f.nss[name])
	return nil
}

// passWritesNothing runs one pass of s, which is in sync with f, and
// fails t if it wrote.
func (f *fakeTarget) passWritesNothing(t *testing.T, ctx context.Context, s *Syncer) {
	t.Helper()
	f.mu.Lock()
	before := f.writes
	f.mu.Unlock()
	if err := s.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writes != before {
		t.Errorf("a pass in sync wrote %d times", f.writes-before)
	}
}

func (f *fakeTarget) labels(id string) map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ep := range f.eps {
		if ep.ContainerID == id {
			return maps.Clone(ep.Labels)
		}
	}
	return nil
}

func pod(ns, name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}, Spec: corev1.PodSpec{NodeName: node}}
}

func identity(ns, name string) map[string]string {
	return map[string]string{api.LabelPodNamespace: ns, api.LabelPodName: name}
}

// runSyncer runs a Syncer of node until the test ends, and fails the
// test if Run returns an error.
func runSyncer(t *testing.T, client *fake.Clientset, node string, target Target) (*Syncer, context.Context) {
	s := NewSyncer(client, node, target, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s, ctx
}

// eventually waits for cond, failing with what after a while.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The Syncer, with client-go's real informers over a fake API server,
// gives each local endpoint its pod's labels and each namespace its
// labels, follows changes, and leaves alone endpoints it cannot tie to a
// pod of this node.
func TestSyncer(t *testing.T) {
	client := fake.NewClientset(
		pod("shop", "web-1", "node-1", map[string]string{"app": "web", "tier": "front"}),
		// Same name on another node: not this node's pod.
		pod("shop", "db-1", "node-2", map[string]string{"app": "db"}),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "a"}}},
	)
	target := &fakeTarget{nss: map[string]map[string]string{"old": {"x": "y"}}, eps: []api.Endpoint{
		// From slim-cni's ADD: identity and the conflist's labels.
		{ContainerID: "web", IfName: "eth0", Labels: map[string]string{api.LabelPodNamespace: "shop", api.LabelPodName: "web-1", "stale": "1"}},
		{ContainerID: "db", IfName: "eth0", Labels: identity("shop", "db-1")},
		{ContainerID: "gone", IfName: "eth0", Labels: identity("shop", "gone-1")},
		{ContainerID: "plain", IfName: "eth0", Labels: map[string]string{"app": "x"}},
	}}
	s, ctx := runSyncer(t, client, "node-1", target)

	want := map[string]string{"app": "web", "tier": "front", api.LabelPodNamespace: "shop", api.LabelPodName: "web-1"}
	eventually(t, "the pod's labels on its endpoint", func() bool { return reflect.DeepEqual(target.labels("web"), want) })
	eventually(t, "the namespace's labels", func() bool {
		l, _ := target.NamespaceLabels("shop")
		return reflect.DeepEqual(l, map[string]string{"team": "a"})
	})
	if got := target.labels("db"); !reflect.DeepEqual(got, identity("shop", "db-1")) {
		t.Errorf("another node's pod labelled this node's endpoint: %v", got)
	}
	if got := target.labels("gone"); !reflect.DeepEqual(got, identity("shop", "gone-1")) {
		t.Errorf("an endpoint without a known pod changed: %v", got)
	}
	if got := target.labels("plain"); !reflect.DeepEqual(got, map[string]string{"app": "x"}) {
		t.Errorf("an endpoint that names no pod changed: %v", got)
	}
	if l, ok := target.NamespaceLabels("old"); !ok || l["x"] != "y" {
		t.Errorf("a namespace Kubernetes does not have changed: %v", l)
	}

	// Changes follow: a relabelled pod, a relabelled namespace.
	p, _ := client.CoreV1().Pods("shop").Get(ctx, "web-1", metav1.GetOptions{})
	p.Labels = map[string]string{"app": "web", "version": "2"}
	if _, err := client.CoreV1().Pods("shop").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want = map[string]string{"app": "web", "version": "2", api.LabelPodNamespace: "shop", api.LabelPodName: "web-1"}
	eventually(t, "the relabelled pod's labels", func() bool { return reflect.DeepEqual(target.labels("web"), want) })
	n, _ := client.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{})
	n.Labels = map[string]string{"team": "b"}
	if _, err := client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the relabelled namespace", func() bool {
		l, _ := target.NamespaceLabels("shop")
		return reflect.DeepEqual(l, map[string]string{"team": "b"})
	})

	// A pass with nothing to change writes nothing.
	target.passWritesNothing(t, ctx, s)

	// An endpoint that appears after its pod gets its labels on a kick
	// (slimd kicks on every endpoint change).
	if _, err := client.CoreV1().Pods("shop").Create(ctx, pod("shop", "web-2", "node-1", map[string]string{"app": "web"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	target.mu.Lock()
	target.eps = append(target.eps, api.Endpoint{ContainerID: "web2", IfName: "eth0", Labels: identity("shop", "web-2")})
	target.mu.Unlock()
	s.Kick()
	eventually(t, "the new endpoint's labels", func() bool { return target.labels("web2")["app"] == "web" })
}

// A failed write is retried.
func TestSyncerRetries(t *testing.T) {
	client := fake.NewClientset(pod("shop", "web-1", "node-1", map[string]string{"app": "web"}))
	target := &fakeTarget{fail: true, nss: map[string]map[string]string{}, eps: []api.Endpoint{
		{ContainerID: "web", IfName: "eth0", Labels: identity("shop", "web-1")}}}
	runSyncer(t, client, "node-1", target)
	time.Sleep(500 * time.Millisecond)
	target.mu.Lock()
	target.fail = false
	target.mu.Unlock()
	eventually(t, "the retried write", func() bool { return target.labels("web")["app"] == "web" })
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		have, want map[string]string
		change     api.LabelChange
		ok         bool
	}{
		{nil, nil, api.LabelChange{}, false},
		{map[string]string{"a": "1"}, map[string]string{"a": "1"}, api.LabelChange{}, false},
		{map[string]string{"a": "1", "c": "3", "b": "2"}, map[string]string{"a": "2"}, api.LabelChange{Set: map[string]string{"a": "2"}, Remove: []string{"b", "c"}}, true},
		{nil, map[string]string{"a": "1"}, api.LabelChange{Set: map[string]string{"a": "1"}}, true},
	} {
		c, ok := diff(tc.have, tc.want)
		if ok != tc.ok || !reflect.DeepEqual(c, tc.change) {
			t.Errorf("diff(%v, %v) = %+v %v, want %+v %v", tc.have, tc.want, c, ok, tc.change, tc.ok)
		}
	}
}

func netpol(ns, name string, app string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			// Empty, not nil: the store gives nil back, and that is no change.
			PolicyTypes: []networkingv1.PolicyType{},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}}}},
		},
	}
}

func operatorPolicy(ns, name string) networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// NetworkPolicies become Slim policies marked as Kubernetes': new,
// changed and deleted ones follow, an operator's policy of another name
// stays, one of the same name is replaced, one Slim cannot enforce is
// left out, and only the leader writes.
func TestSyncerPolicies(t *testing.T) {
	bad := netpol("shop", "mapped", "x")
	bad.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
		IPBlock: &networkingv1.IPBlock{CIDR: "::ffff:10.0.0.0/104"}}}}}
	client := fake.NewClientset(netpol("shop", "web", "web"), netpol("shop", "db", "db"), bad,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "a"}}})
	stale := *netpol("shop", "old", "old")
	stale.Annotations = map[string]string{api.AnnotationSource: api.SourceKubernetes}
	target := &fakeTarget{follower: true, nss: map[string]map[string]string{}, pols: map[string]networkingv1.NetworkPolicy{
		"shop/admin": operatorPolicy("shop", "admin"),
		"shop/db":    operatorPolicy("shop", "db"),
		"shop/old":   stale,
	}}
	s, ctx := runSyncer(t, client, "node-2", target)

	// A follower writes nothing cluster-wide.
	time.Sleep(300 * time.Millisecond)
	if err := s.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	target.mu.Lock()
	writes := target.writes
	target.follower = false
	target.mu.Unlock()
	if writes != 0 {
		t.Fatalf("a follower wrote %d times", writes)
	}
	s.Kick()

	mirrored := func(key, app string) func() bool {
		return func() bool {
			p, ok := target.policy(key)
			return ok && fromKubernetes(p.ObjectMeta) && p.Spec.PodSelector.MatchLabels["app"] == app
		}
	}
	eventually(t, "shop/web mirrored", mirrored("shop/web", "web"))
	eventually(t, "the operator's shop/db replaced by Kubernetes'", mirrored("shop/db", "db"))
	eventually(t, "the stale shop/old deleted", func() bool { _, ok := target.policy("shop/old"); return !ok })
	if p, ok := target.policy("shop/admin"); !ok || fromKubernetes(p.ObjectMeta) {
		t.Errorf("the operator's shop/admin: %+v, %v", p, ok)
	}
	if _, ok := target.policy("shop/mapped"); ok {
		t.Error("a policy Slim refuses was mirrored")
	}
	if l, _ := target.NamespaceLabels("shop"); l["team"] != "a" {
		t.Errorf("the leader did not label the namespace: %v", l)
	}
	target.passWritesNothing(t, ctx, s)

	// Changes follow.
	np := netpol("shop", "web", "web2")
	if _, err := client.NetworkingV1().NetworkPolicies("shop").Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the changed shop/web", mirrored("shop/web", "web2"))
	if err := client.NetworkingV1().NetworkPolicies("shop").Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted shop/db", func() bool { _, ok := target.policy("shop/db"); return !ok })
	if _, ok := target.policy("shop/admin"); !ok {
		t.Error("the operator's shop/admin went")
	}
}

// More policies than one batch holds are written in several.
func TestSyncerPolicyBatches(t *testing.T) {
	var objs []runtime.Object
	for i := range MaxPolicyBatch + 5 {
		objs = append(objs, netpol("shop", fmt.Sprintf("p%d", i), "web"))
	}
	client := fake.NewClientset(objs...)
	target := &fakeTarget{nss: map[string]map[string]string{}}
	runSyncer(t, client, "node-1", target)
	eventually(t, "every policy mirrored", func() bool { return len(target.Policies()) == MaxPolicyBatch+5 })
}

// svc is a Service as the API server returns it, defaults filled in.
func svc(ns, name, ip string, mutate ...func(*corev1.Service)) *corev1.Service {
	cluster := corev1.ServiceInternalTrafficPolicyCluster
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			Selector:              map[string]string{"app": name},
			Ports:                 []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
			SessionAffinity:       corev1.ServiceAffinityNone,
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
			InternalTrafficPolicy: &cluster,
		},
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

// Services whose meaning Slim implements become Slim services with their
// cluster IPs; the others (node ports, affinity, headless, outside the
// service CIDR) are left to kube-proxy; changes, a new cluster IP and
// deletions follow; an operator's service of another name stays.
func TestSyncerServices(t *testing.T) {
	client := fake.NewClientset(
		svc("shop", "web", "10.96.0.10"),
		svc("shop", "np", "10.96.0.11", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort; s.Spec.Ports[0].NodePort = 30080 }),
		svc("shop", "sticky", "10.96.0.12", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }),
		svc("shop", "headless", corev1.ClusterIPNone, func(s *corev1.Service) { s.Spec.ClusterIPs = nil }),
		svc("shop", "far", "172.20.0.10"),
		svc("shop", "local", "10.96.0.13", func(s *corev1.Service) {
			l := corev1.ServiceInternalTrafficPolicyLocal
			s.Spec.InternalTrafficPolicy = &l
		}),
	)
	target := &fakeTarget{nss: map[string]map[string]string{}, svcs: map[string]corev1.Service{
		"shop/admin": {ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "admin"}},
	}}
	s, ctx := runSyncer(t, client, "node-1", target)
	eventually(t, "shop/web mirrored", func() bool {
		m, ok := target.service("shop/web")
		return ok && fromKubernetes(m.ObjectMeta) && m.Spec.ClusterIP == "10.96.0.10" && m.Spec.Ports[0].TargetPort.IntVal == 8080
	})
	for _, name := range []string{"np", "sticky", "headless", "far", "local"} {
		if _, ok := target.service("shop/" + name); ok {
			t.Errorf("shop/%s mirrored; Slim does not implement it", name)
		}
	}
	target.passWritesNothing(t, ctx, s)

	// A changed selector, then the Service recreated with another
	// cluster IP, then deleted.
	web := svc("shop", "web", "10.96.0.10", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "web2"} })
	if _, err := client.CoreV1().Services("shop").Update(ctx, web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new selector", func() bool { m, _ := target.service("shop/web"); return m.Spec.Selector["app"] == "web2" })
	// Recreated with another cluster IP, seen in one step (as after a
	// relist; the fake API server lets an update change it).
	if _, err := client.CoreV1().Services("shop").Update(ctx, svc("shop", "web", "10.96.0.20"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new cluster IP", func() bool { m, _ := target.service("shop/web"); return m.Spec.ClusterIP == "10.96.0.20" })
	if err := client.CoreV1().Services("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "shop/web deleted", func() bool { _, ok := target.service("shop/web"); return !ok })
	if _, ok := target.service("shop/admin"); !ok {
		t.Error("the operator's shop/admin went")
	}
}
