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
// namespace and name, marked as Kubernetes' (api.AnnotationPolicySource):
// the Syncer replaces and deletes only those, never an operator's.
package kube

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/policy"
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
}

// MaxPolicyBatch bounds the policies of one PutPolicies call (below
// etcd's default of 128 operations in one transaction).
const MaxPolicyBatch = 100

// Watched is what the Syncer lists and watches, as RBAC names it: the
// DaemonSet's ClusterRole must grant get, list and watch on each.
var Watched = []struct{ Group, Resource string }{
	{"", "pods"}, {"", "namespaces"}, {"networking.k8s.io", "networkpolicies"},
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
	synced     []cache.InformerSynced
	kick       chan struct{}

	// refused: policies Slim cannot enforce, by key, at the version last
	// logged (one warning per version, not per pass).
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
	s.pods, s.namespaces, s.policies = pods.Lister(), nss.Lister(), nps.Lister()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.Kick() },
		UpdateFunc: func(any, any) { s.Kick() },
		DeleteFunc: func(any) { s.Kick() },
	}
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), nss.Informer(), nps.Informer()} {
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
		if err := policy.Validate(&p); err != nil {
			if s.refused[key] != np.ResourceVersion {
				s.refused[key] = np.ResourceVersion
				s.log.Warn("kubernetes: network policy not mirrored: Slim cannot enforce it", "policy", key, "err", err)
			}
			continue
		}
		delete(s.refused, key)
		want[key] = true
		if h, ok := have[key]; ok && fromKubernetes(h) && equality.Semantic.DeepEqual(h.Spec, p.Spec) {
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
		if h := have[key]; fromKubernetes(h) && !want[key] {
			if err := s.target.DeletePolicy(ctx, h.Namespace, h.Name); err != nil {
				errs = append(errs, fmt.Errorf("policy %s: %w", key, err))
			}
		}
	}
	return errs
}

// mirror is Slim's policy for a NetworkPolicy: its namespace, name and
// spec, marked as Kubernetes'.
func mirror(np *networkingv1.NetworkPolicy) networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: np.Namespace, Name: np.Name,
			Annotations: map[string]string{api.AnnotationPolicySource: api.PolicySourceKubernetes}},
		Spec: *np.Spec.DeepCopy(),
	}
}

func fromKubernetes(p networkingv1.NetworkPolicy) bool {
	return p.Annotations[api.AnnotationPolicySource] == api.PolicySourceKubernetes
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
