package daemon

import (
	"context"
	"fmt"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/kube"
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
