// Package kube keeps Slim's view of pods' identity current from the
// Kubernetes API server: each endpoint's labels are its pod's labels (plus
// the pod's namespace and name, as slim-cni sets them from CNI_ARGS at
// ADD), and each namespace's labels are the Namespace object's. Policies
// and services select endpoints by both.
//
// A Syncer watches the Pods of its own node (an informer with a field
// selector, as the kubelet's view of the node) and every Namespace, and
// reconciles: every change of a pod, a namespace or a local endpoint
// triggers one pass that compares what Slim holds with what the API
// server says and writes only the differences.
package kube

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/slimnet/slim/internal/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
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
	synced     []cache.InformerSynced
	kick       chan struct{}
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
	s := &Syncer{node: node, target: target, log: log, kick: make(chan struct{}, 1)}
	s.factory = informers.NewSharedInformerFactoryWithOptions(client, resyncPeriod,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}))
	s.nsFactory = informers.NewSharedInformerFactory(client, resyncPeriod)
	pods := s.factory.Core().V1().Pods()
	nss := s.nsFactory.Core().V1().Namespaces()
	s.pods, s.namespaces = pods.Lister(), nss.Lister()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.Kick() },
		UpdateFunc: func(any, any) { s.Kick() },
		DeleteFunc: func(any) { s.Kick() },
	}
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), nss.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			log.Error("kubernetes informer", "err", err)
		}
		s.synced = append(s.synced, inf.HasSynced)
	}
	return s
}

// Kick asks for a pass soon: the informers call it on every change, and
// slimd on every change of its endpoints (a pod's endpoint appears after
// the pod object).
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
	s.log.Info("kubernetes: watching pods and namespaces", "node", s.node)
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

// Pass makes the Target's labels those of the API server, once: for each
// local endpoint that names a pod (its namespace and name labels), the
// pod's labels; for each namespace, its labels. An endpoint whose pod is
// not (or no longer) known is left alone.
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
	nss, err := s.namespaces.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, n := range nss {
		have, _ := s.target.NamespaceLabels(n.Name)
		if change, ok := diff(have, n.Labels); ok {
			if err := s.target.LabelNamespace(ctx, n.Name, change); err != nil {
				errs = append(errs, fmt.Errorf("namespace %s: %w", n.Name, err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d writes failed, first: %w", len(errs), errs[0])
	}
	return nil
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
