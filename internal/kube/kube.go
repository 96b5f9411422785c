// Package kube keeps Slim's view of pods' identity current from the
// Kubernetes API server: each endpoint's labels are its pod's labels (plus
// the pod's namespace and name, as slim-cni sets them from CNI_ARGS at
// ADD), and each namespace's labels are the Namespace object's. Policies
// and services select endpoints by both.
//
// A Syncer watches the Pods of its own node (an informer with a field
// selector, as the kubelet's view of the node), every Namespace and every
// NetworkPolicy, and reconciles: every change of a pod, a namespace, a
// policy or a local endpoint triggers one pass that compares what Slim
// holds with what the API server says and writes only the differences.
//
// Pods are per node; namespaces and policies are the cluster's, and only
// the leader (the Target says which node; slimd picks the live host with
// the lowest name) writes those, so that a change is written once rather
// than by every node. NetworkPolicies become Slim policies of the same
// namespace and name, marked as Kubernetes' (api.AnnotationSource):
// the Syncer replaces and deletes only those, never an operator's.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/policy"
	"github.com/slimnet/slim/internal/service"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	netlistersv1 "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// Target is what the Syncer reads and writes in Slim.
type Target interface {
	// Endpoints are this node's endpoints.
	Endpoints() []api.Endpoint
	// LabelEndpoint changes an endpoint's labels.
	LabelEndpoint(ctx context.Context, a api.Attachment, change api.LabelChange) error
	// NamespaceLabels are a namespace's labels in Slim (ok false: none).
	NamespaceLabels(name string) (map[string]string, bool)
	// LabelNamespace changes a namespace's labels.
	LabelNamespace(ctx context.Context, name string, change api.LabelChange) error
	// Leader reports whether this node writes what is cluster-wide:
	// namespaces' labels and policies.
	Leader() bool
	// Policies are Slim's policies, every source's.
	Policies() []networkingv1.NetworkPolicy
	// PutPolicies creates or replaces policies, at most MaxPolicyBatch.
	PutPolicies(ctx context.Context, ps []networkingv1.NetworkPolicy) error
	// DeletePolicy removes a policy.
	DeletePolicy(ctx context.Context, namespace, name string) error
	// Services are Slim's services, every source's.
	Services() []corev1.Service
	// ServiceCIDR is where Slim's services' cluster IPs must be.
	ServiceCIDR() netip.Prefix
	// PutService creates or replaces a service, its cluster IP given.
	PutService(ctx context.Context, svc corev1.Service) error
	// DeleteService removes a service.
	DeleteService(ctx context.Context, namespace, name string) error
}

// MaxPolicyBatch bounds the policies of one PutPolicies call (below
// etcd's default of 128 operations in one transaction).
const MaxPolicyBatch = 100

// Watched is what the Syncer lists and watches, as RBAC names it: the
// DaemonSet's ClusterRole must grant get, list and watch on each.
var Watched = []struct{ Group, Resource string }{
	{"", "pods"}, {"", "namespaces"}, {"", "services"}, {"networking.k8s.io", "networkpolicies"},
}

// Syncer mirrors pods' and namespaces' labels into a Target.
type Syncer struct {
	node   string
	target Target
	log    *slog.Logger

	factory    informers.SharedInformerFactory
	nsFactory  informers.SharedInformerFactory
	pods       listersv1.PodLister
	namespaces listersv1.NamespaceLister
	policies   netlistersv1.NetworkPolicyLister
	services   listersv1.ServiceLister
	synced     []cache.InformerSynced
	kick       chan struct{}

	// passMu serializes passes (Run's and any caller's).
	passMu sync.Mutex
	// refused: policies and services Slim leaves out, by kind and key,
	// at the version last logged (one message per version, not per pass).
	refused map[string]string
}

// Client connects to the API server with kubeconfig, or from inside the
// cluster (the pod's service account) when kubeconfig is "".
func Client(kubeconfig string) (kubernetes.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return kubernetes.NewForConfig(cfg)
}

// resyncPeriod replays the informers' caches, so that a write that failed
// (or an endpoint the Syncer was not told of) is retried.
const resyncPeriod = 5 * time.Minute

// NewSyncer returns a Syncer of node's pods; Run starts it.
func NewSyncer(client kubernetes.Interface, node string, target Target, log *slog.Logger) *Syncer {
	s := &Syncer{node: node, target: target, log: log, kick: make(chan struct{}, 1), refused: map[string]string{}}
	s.factory = informers.NewSharedInformerFactoryWithOptions(client, resyncPeriod,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}))
	s.nsFactory = informers.NewSharedInformerFactory(client, resyncPeriod)
	pods := s.factory.Core().V1().Pods()
	nss := s.nsFactory.Core().V1().Namespaces()
	nps := s.nsFactory.Networking().V1().NetworkPolicies()
	svcs := s.nsFactory.Core().V1().Services()
	s.pods, s.namespaces, s.policies, s.services = pods.Lister(), nss.Lister(), nps.Lister(), svcs.Lister()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.Kick() },
		UpdateFunc: func(any, any) { s.Kick() },
		DeleteFunc: func(any) { s.Kick() },
	}
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), nss.Informer(), nps.Informer(), svcs.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			log.Error("kubernetes informer", "err", err)
		}
		s.synced = append(s.synced, inf.HasSynced)
	}
	return s
}

// Kick asks for a pass soon: the informers call it on every change, and
// slimd on every change of its endpoints (a pod's endpoint appears after
// the pod object) and of the hosts (the leader may change).
func (s *Syncer) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run syncs until ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	s.factory.Start(ctx.Done())
	s.nsFactory.Start(ctx.Done())
	defer s.factory.Shutdown()
	defer s.nsFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return ctx.Err()
	}
	s.log.Info("kubernetes: watching pods, namespaces and network policies", "node", s.node)
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		if err := s.Pass(ctx); err != nil {
			s.log.Warn("kubernetes: sync pass", "err", err)
			retry.Reset(2 * time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-retry.C:
		}
	}
}

// Pass makes the Target's labels and policies those of the API server,
// once: for each local endpoint that names a pod (its namespace and name
// labels), the pod's labels; on the leader, for each namespace its
// labels, and the NetworkPolicies. An endpoint whose pod is not (or no
// longer) known is left alone.
func (s *Syncer) Pass(ctx context.Context) error {
	s.passMu.Lock()
	defer s.passMu.Unlock()
	var errs []error
	for _, ep := range s.target.Endpoints() {
		ns, name := ep.Labels[api.LabelPodNamespace], ep.Labels[api.LabelPodName]
		if ns == "" || name == "" {
			continue
		}
		pod, err := s.pods.Pods(ns).Get(name)
		if err != nil || pod.Spec.NodeName != s.node {
			continue
		}
		if change, ok := diff(ep.Labels, podLabels(pod)); ok {
			a := api.Attachment{ContainerID: ep.ContainerID, IfName: ep.IfName}
			if err := s.target.LabelEndpoint(ctx, a, change); err != nil {
				errs = append(errs, fmt.Errorf("endpoint of pod %s/%s: %w", ns, name, err))
			}
		}
	}
	if s.target.Leader() {
		errs = append(errs, s.syncNamespaces(ctx)...)
		errs = append(errs, s.syncPolicies(ctx)...)
		errs = append(errs, s.syncServices(ctx)...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d writes failed, first: %w", len(errs), errs[0])
	}
	return nil
}

// syncNamespaces gives each namespace Slim knows the labels Kubernetes
// gives it.
func (s *Syncer) syncNamespaces(ctx context.Context) []error {
	nss, err := s.namespaces.List(labels.Everything())
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, n := range nss {
		have, _ := s.target.NamespaceLabels(n.Name)
		if change, ok := diff(have, n.Labels); ok {
			if err := s.target.LabelNamespace(ctx, n.Name, change); err != nil {
				errs = append(errs, fmt.Errorf("namespace %s: %w", n.Name, err))
			}
		}
	}
	return errs
}

// syncPolicies makes Slim's Kubernetes policies the NetworkPolicies: new
// and changed ones written (in batches), gone ones deleted. One that Slim
// cannot enforce (policy.Validate) is logged and left out, and the
// others still apply: Slim holds no policy of that name from Kubernetes.
func (s *Syncer) syncPolicies(ctx context.Context) []error {
	nps, err := s.policies.List(labels.Everything())
	if err != nil {
		return []error{err}
	}
	have := map[string]networkingv1.NetworkPolicy{}
	for _, p := range s.target.Policies() {
		have[p.Namespace+"/"+p.Name] = p
	}
	want := map[string]bool{}
	var put []networkingv1.NetworkPolicy
	for _, np := range nps {
		key := np.Namespace + "/" + np.Name
		p := mirror(np)
		err := policy.Validate(&p)
		if s.note("policy "+key, np.ResourceVersion, err) {
			s.log.Warn("kubernetes: network policy not mirrored: Slim cannot enforce it", "policy", key, "err", err)
		}
		if err != nil {
			continue
		}
		want[key] = true
		if h, ok := have[key]; ok && fromKubernetes(h.ObjectMeta) && equality.Semantic.DeepEqual(h.Spec, p.Spec) {
			continue
		}
		put = append(put, p)
	}
	var errs []error
	for chunk := range slices.Chunk(put, MaxPolicyBatch) {
		if err := s.target.PutPolicies(ctx, chunk); err != nil {
			errs = append(errs, fmt.Errorf("%d policies from %s/%s: %w", len(chunk), chunk[0].Namespace, chunk[0].Name, err))
		}
	}
	for _, key := range slices.Sorted(maps.Keys(have)) {
		if h := have[key]; fromKubernetes(h.ObjectMeta) && !want[key] {
			if err := s.target.DeletePolicy(ctx, h.Namespace, h.Name); err != nil {
				errs = append(errs, fmt.Errorf("policy %s: %w", key, err))
			}
		}
	}
	return errs
}

// note keeps the refusals to log once per object version: it reports
// whether refused (an object at version not mirrored) is new, and
// forgets the object once it is mirrored (refused nil).
func (s *Syncer) note(key, version string, refused error) bool {
	if refused == nil {
		delete(s.refused, key)
		return false
	}
	if s.refused[key] == version {
		return false
	}
	s.refused[key] = version
	return true
}

// mirror is Slim's policy for a NetworkPolicy: its namespace, name and
// spec, marked as Kubernetes'.
func mirror(np *networkingv1.NetworkPolicy) networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: np.Namespace, Name: np.Name,
			Annotations: map[string]string{api.AnnotationSource: api.SourceKubernetes}},
		Spec: *np.Spec.DeepCopy(),
	}
}

func fromKubernetes(m metav1.ObjectMeta) bool {
	return m.Annotations[api.AnnotationSource] == api.SourceKubernetes
}

// syncServices makes Slim's Kubernetes services the Services whose
// meaning Slim implements in full (mirrorService), with the cluster IPs
// the API server gave them. The others stay kube-proxy's alone: a
// fast-path connect to their cluster IP is not Slim's and goes the way
// it would without Slim.
func (s *Syncer) syncServices(ctx context.Context) []error {
	ks, err := s.services.List(labels.Everything())
	if err != nil {
		return []error{err}
	}
	have := map[string]corev1.Service{}
	for _, svc := range s.target.Services() {
		have[svc.Namespace+"/"+svc.Name] = svc
	}
	cidr := s.target.ServiceCIDR()
	want := map[string]bool{}
	var errs []error
	for _, k := range ks {
		key := k.Namespace + "/" + k.Name
		m, err := mirrorService(k, cidr)
		if s.note("service "+key, k.ResourceVersion, err) {
			s.log.Info("kubernetes: service left to kube-proxy", "service", key, "why", err)
		}
		if err != nil {
			continue
		}
		want[key] = true
		h, ok := have[key]
		if ok && fromKubernetes(h.ObjectMeta) && equality.Semantic.DeepEqual(slimSpec(h.Spec), slimSpec(m.Spec)) &&
			h.Annotations[service.AnnotationBackendRemoval] == m.Annotations[service.AnnotationBackendRemoval] {
			continue
		}
		// A cluster IP never changes in place: a Service recreated
		// with another one replaces Slim's.
		if ok && h.Spec.ClusterIP != m.Spec.ClusterIP {
			if err := s.target.DeleteService(ctx, h.Namespace, h.Name); err != nil {
				errs = append(errs, fmt.Errorf("service %s: %w", key, err))
				continue
			}
		}
		if err := s.target.PutService(ctx, m); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", key, err))
		}
	}
	for _, key := range slices.Sorted(maps.Keys(have)) {
		if h := have[key]; fromKubernetes(h.ObjectMeta) && !want[key] {
			if err := s.target.DeleteService(ctx, h.Namespace, h.Name); err != nil {
				errs = append(errs, fmt.Errorf("service %s: %w", key, err))
			}
		}
	}
	return errs
}

// mirrorService is Slim's service for a Kubernetes Service, or why there
// is none (the error): Slim balances every connection of a selector-backed IPv4
// ClusterIP service over all its endpoints, so a Service that means
// more (node ports, session affinity, node-local traffic, dual stack) or
// whose cluster IP is outside Slim's service CIDR is left out.
func mirrorService(k *corev1.Service, cidr netip.Prefix) (corev1.Service, error) {
	sp := &k.Spec
	ip, err := netip.ParseAddr(sp.ClusterIP)
	switch {
	case sp.Type != "" && sp.Type != corev1.ServiceTypeClusterIP:
		return corev1.Service{}, errors.New("type " + string(sp.Type))
	case sp.ClusterIP == corev1.ClusterIPNone:
		return corev1.Service{}, errors.New("headless")
	case len(sp.Selector) == 0:
		return corev1.Service{}, errors.New("no selector")
	case err != nil || !ip.Is4():
		return corev1.Service{}, errors.New("cluster IP " + sp.ClusterIP + " is not an IPv4 address")
	case !cidr.Contains(ip):
		return corev1.Service{}, fmt.Errorf("cluster IP %s is outside Slim's service CIDR %s", ip, cidr)
	case len(sp.ClusterIPs) > 1:
		return corev1.Service{}, errors.New("dual stack")
	case sp.SessionAffinity != "" && sp.SessionAffinity != corev1.ServiceAffinityNone:
		return corev1.Service{}, errors.New("session affinity " + string(sp.SessionAffinity))
	case sp.InternalTrafficPolicy != nil && *sp.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyCluster:
		return corev1.Service{}, errors.New("internal traffic policy " + string(*sp.InternalTrafficPolicy))
	case len(sp.ExternalIPs) > 0:
		return corev1.Service{}, errors.New("external IPs")
	}
	m := corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name, Annotations: map[string]string{api.AnnotationSource: api.SourceKubernetes}},
		Spec:       slimSpec(*sp),
	}
	if v := k.Annotations[service.AnnotationBackendRemoval]; v != "" {
		m.Annotations[service.AnnotationBackendRemoval] = v
	}
	if err := service.Validate(&m); err != nil {
		return corev1.Service{}, err
	}
	return m, nil
}

// slimSpec is the part of a service's spec Slim acts on, as it stores it.
func slimSpec(sp corev1.ServiceSpec) corev1.ServiceSpec {
	out := corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: sp.ClusterIP, ClusterIPs: []string{sp.ClusterIP}, Selector: maps.Clone(sp.Selector)}
	for _, p := range sp.Ports {
		out.Ports = append(out.Ports, corev1.ServicePort{Name: p.Name, Protocol: service.Protocol(p.Protocol), Port: p.Port, TargetPort: p.TargetPort})
	}
	return out
}

// podLabels are the labels a pod's endpoint should carry.
func podLabels(p *corev1.Pod) map[string]string {
	out := maps.Clone(p.Labels)
	if out == nil {
		out = map[string]string{}
	}
	out[api.LabelPodNamespace], out[api.LabelPodName] = p.Namespace, p.Name
	return out
}

// diff is the change that turns have into want, and whether there is one.
func diff(have, want map[string]string) (api.LabelChange, bool) {
	var c api.LabelChange
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			if c.Set == nil {
				c.Set = map[string]string{}
			}
			c.Set[k] = v
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			c.Remove = append(c.Remove, k)
		}
	}
	slices.Sort(c.Remove)
	return c, len(c.Set) > 0 || len(c.Remove) > 0
}
