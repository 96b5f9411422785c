package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/kube"
	"github.com/slimnet/slim/internal/store"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// kubeTarget is the daemon as the Kubernetes syncer sees it: this host's
// endpoints and the namespaces, changed through the store as the API's
// label calls change them.
type kubeTarget struct{ d *Daemon }

func (t kubeTarget) Endpoints() []api.Endpoint { return t.d.view.localEndpoints() }

func (t kubeTarget) LabelEndpoint(ctx context.Context, a api.Attachment, change api.LabelChange) error {
	_, err := t.d.labelEndpoint(ctx, a, change)
	return err
}

func (t kubeTarget) NamespaceLabels(name string) (map[string]string, bool) { return t.d.nss.Get(name) }

func (t kubeTarget) LabelNamespace(ctx context.Context, name string, change api.LabelChange) error {
	_, rev, err := t.d.store.LabelNamespace(ctx, name, change)
	if err != nil {
		return err
	}
	return t.d.nss.WaitRev(ctx, rev)
}

// Leader: the live host with the lowest name writes what is
// cluster-wide. While hosts come and go two may both think they lead;
// they write the same thing.
func (t kubeTarget) Leader() bool {
	self, lead := t.d.cfg.NodeName, true
	t.d.hosts.Range(func(name string, _ api.Host) bool {
		if name < self {
			lead = false
		}
		return lead
	})
	return lead
}

func (t kubeTarget) Policies() []networkingv1.NetworkPolicy { return values(t.d.pols) }

func (t kubeTarget) PutPolicies(ctx context.Context, ps []networkingv1.NetworkPolicy) error {
	rev, err := t.d.store.PutPolicies(ctx, ps)
	return seen(ctx, t.d.pols, rev, err)
}

func (t kubeTarget) DeletePolicy(ctx context.Context, namespace, name string) error {
	rev, err := t.d.store.DeletePolicy(ctx, namespace, name)
	return seen(ctx, t.d.pols, rev, err)
}

func (t kubeTarget) Services() []corev1.Service { return values(t.d.svcs) }

func (t kubeTarget) ServiceCIDR() netip.Prefix { return t.d.cfg.ServiceCIDR }

func (t kubeTarget) PutService(ctx context.Context, svc corev1.Service) error {
	_, rev, err := t.d.store.PutService(ctx, svc, t.d.cfg.ServiceCIDR)
	return seen(ctx, t.d.svcs, rev, err)
}

func (t kubeTarget) DeleteService(ctx context.Context, namespace, name string) error {
	rev, err := t.d.store.DeleteService(ctx, namespace, name)
	return seen(ctx, t.d.svcs, rev, err)
}

// values copies a cache's values.
func values[T any](c *store.Cache[T]) []T {
	var out []T
	c.Range(func(_ string, v T) bool {
		out = append(out, v)
		return true
	})
	return out
}

// seen finishes a write of the syncer's: it returns once cache c has the
// write at rev, so that the next pass sees it. Deleting what is gone is
// no error.
func seen[T any](ctx context.Context, c *store.Cache[T], rev int64, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return c.WaitRev(ctx, rev)
}

// setupKube connects to the API server when slimd runs in a Kubernetes
// cluster (--kubernetes or --kubeconfig).
func (d *Daemon) setupKube() error {
	if !d.cfg.Kubernetes {
		return nil
	}
	client, err := kube.Client(d.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes: %w", err)
	}
	d.kube = kube.NewSyncer(client, d.cfg.NodeName, kubeTarget{d}, d.log.With("component", "kubernetes"))
	return nil
}
