package lab

import (
	"context"
	"fmt"
	"maps"

	"github.com/slimnet/slim/internal/api"
)

// Label changes the labels of container name while it runs, as a pod's
// labels change in Kubernetes: its host's slimd updates the endpoint, and
// every host's network policies follow (connections they now deny are
// cut). The state file records the new labels.
func Label(ctx context.Context, cfg Config, name string, change api.LabelChange) (Container, error) {
	if err := ValidateName(name); err != nil {
		return Container{}, err
	}
	dir := cfg.stateDir()
	c, err := loadContainer(dir, name)
	if err != nil {
		return Container{}, err
	}
	ep, err := api.NewClient(SocketPath(cfg, c.Host)).LabelEndpoint(ctx,
		api.Attachment{ContainerID: c.ContainerID, IfName: ContainerIface}, change)
	if err != nil {
		return c, fmt.Errorf("label container %s: %w", name, err)
	}
	// The state keeps the user's labels, as RunSpec gave them.
	c.Labels = maps.Clone(ep.Labels)
	delete(c.Labels, api.LabelPodNamespace)
	delete(c.Labels, api.LabelPodName)
	return c, saveContainer(dir, c)
}
