package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/store"
)

// countKeysTimeout bounds Status's one store call.
const countKeysTimeout = time.Second

// backend answers the local API from the daemon's state.
type backend struct{ d *Daemon }

var _ api.Backend = (*backend)(nil)

func (b *backend) Status(ctx context.Context) (api.Status, error) {
	d := b.d
	st := api.Status{
		Host:          d.self,
		Version:       d.cfg.Version,
		EtcdEndpoints: d.cli.Endpoints(),
		EmbeddedEtcd:  d.etcd != nil,
		StoreSynced:   d.hosts.Synced() && d.endpoints.Synced(),
		StoreContact:  d.lease.LastContact(),
		LeaseTTL:      int(d.cfg.LeaseTTL / time.Second),
		Peers:         d.overlay.Programmed(),
		KnownHosts:    d.hosts.Len(),
		Gateway4:      Gateway4,
		VXLANDevice:   d.cfg.VXLANDevice,
		VNI:           d.cfg.Cluster.VNI,
		VXLANPort:     d.cfg.Cluster.Port,
	}
	if d.self.Subnet6.IsValid() {
		st.Gateway6 = Gateway6
	}
	// Status answers from memory; the key count is a courtesy that must
	// not hold up a CNI ADD (which asks for status first) when the store
	// is slow or gone.
	st.StoreKeys = -1
	cctx, cancel := context.WithTimeout(ctx, countKeysTimeout)
	defer cancel()
	if n, err := d.store.CountKeys(cctx); err == nil {
		st.StoreKeys = n
	}
	return st, nil
}

func (b *backend) Hosts(ctx context.Context) ([]api.Host, error) {
	hosts, synced := b.d.hosts.Snapshot()
	if !synced {
		return nil, fmt.Errorf("%w: host cache not synced", api.ErrUnavailable)
	}
	out := make([]api.Host, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b api.Host) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

func (b *backend) Endpoints(ctx context.Context, host string) ([]api.Endpoint, error) {
	return onHost(b.d.endpoints, "endpoint", host, func(ep api.Endpoint) string { return ep.Host },
		func(a, b api.Endpoint) int { return cmp.Or(cmp.Compare(a.Host, b.Host), a.IPv4.Compare(b.IPv4)) })
}

// onHost lists the records of a synced cache on host ("": every host),
// sorted.
func onHost[T any](c *store.Cache[T], kind, host string, hostOf func(T) string, order func(a, b T) int) ([]T, error) {
	all, synced := c.Snapshot()
	if !synced {
		return nil, fmt.Errorf("%w: %s cache not synced", api.ErrUnavailable, kind)
	}
	out := make([]T, 0, len(all))
	for _, r := range all {
		if host == "" || hostOf(r) == host {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, order)
	return out, nil
}

func (b *backend) Endpoint(ctx context.Context, a api.Attachment) (api.Endpoint, error) {
	ep, err := b.d.store.Endpoint(ctx, b.d.self.Name, a)
	if err != nil {
		return ep, fmt.Errorf("endpoint %s/%s: %w", a.ContainerID, a.IfName, apiError(err))
	}
	return ep, nil
}

// apiError maps the store's errors to the API's, which the API server
// turns into status codes and clients back into errors.
func apiError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: %w", api.ErrNotFound, err)
	case errors.Is(err, store.ErrExhausted):
		return fmt.Errorf("%w: %w", api.ErrExhausted, err)
	case errors.Is(err, store.ErrInvalid):
		return fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	return err
}

func (b *backend) AddEndpoint(ctx context.Context, r api.EndpointRequest) (api.Endpoint, error) {
	d := b.d
	d.allocMu.Lock()
	defer d.allocMu.Unlock()
	// The endpoint's first source port blocks (one per address family it
	// has) are published with it so that every host can map (host IP,
	// port) back to this container before it makes its first connection:
	// a block claimed at that first connect would race its own
	// publication to the server's host.
	ep, err := d.store.AddEndpoint(ctx, d.hostNet, r, d.cfg.Blocks(), d.lastIPv4, time.Now())
	if err != nil {
		return ep, apiError(err)
	}
	// A family left without a block (none was free, or the endpoint
	// predates blocks) gets another try.
	att := api.Attachment{ContainerID: r.ContainerID, IfName: r.IfName}
	for _, v6 := range []bool{false, true} {
		if v6 && !ep.IPv6.IsValid() {
			continue
		}
		if slices.ContainsFunc(ep.PortBlocks, func(b api.PortBlock) bool { return b.IPv6 == v6 }) {
			continue
		}
		claimed, _, err := d.store.AddEndpointBlock(ctx, d.self.Name, att, d.cfg.Blocks(), v6)
		if err != nil {
			// Without a block the container still works on the overlay.
			d.log.Warn("no port block for endpoint", "container", r.ContainerID, "ipv6", v6, "err", err)
			continue
		}
		ep = claimed
	}
	if ep.IPv4 != d.lastIPv4 {
		d.lastIPv4 = ep.IPv4
	}
	d.metrics.allocations.Inc()
	d.log.Debug("endpoint added", "container", r.ContainerID, "ifname", r.IfName, "ipv4", ep.IPv4)
	return ep, nil
}

func (b *backend) DelEndpoint(ctx context.Context, a api.Attachment) error {
	if err := b.d.store.DelEndpoint(ctx, b.d.self.Name, a); err != nil {
		return err
	}
	b.d.metrics.releases.Inc()
	b.d.log.Debug("endpoint released", "container", a.ContainerID, "ifname", a.IfName)
	return nil
}

func (b *backend) GC(ctx context.Context, r api.GCRequest) (api.GCResponse, error) {
	valid := make(map[api.Attachment]bool, len(r.Valid))
	for _, a := range r.Valid {
		valid[a] = true
	}
	eps, err := b.d.store.Endpoints(ctx, b.d.self.Name)
	if err != nil {
		return api.GCResponse{}, err
	}
	resp := api.GCResponse{Released: []api.Attachment{}}
	var errs []error
	for _, ep := range eps {
		a := api.Attachment{ContainerID: ep.ContainerID, IfName: ep.IfName}
		if valid[a] {
			continue
		}
		if err := b.DelEndpoint(ctx, a); err != nil {
			errs = append(errs, err)
			continue
		}
		resp.Released = append(resp.Released, a)
	}
	if len(resp.Released) > 0 {
		b.d.log.Info("gc released endpoints", "count", len(resp.Released))
	}
	return resp, errors.Join(errs...)
}
