package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/policy"
	"github.com/slimnet/slim/internal/store"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// routes adds the local API's routes beyond the backend's (api.Backend).
func (d *Daemon) routes(srv *api.Server) {
	d.policyRoutes(srv)
	srv.Handle("GET /v1/listeners", func(r *http.Request) (any, error) {
		return d.listenerList(r.URL.Query().Get("host"))
	})
	srv.Handle("GET /v1/check", func(r *http.Request) (any, error) { return d.check(r.Context()), nil })
	srv.Handle("GET /v1/connections", func(r *http.Request) (any, error) { return d.connections() })
	srv.Handle("GET /v1/fastpath", func(r *http.Request) (any, error) { return d.fastPathStatus(), nil })
	srv.Handle("PUT /v1/fastpath", func(r *http.Request) (any, error) {
		var req struct {
			Enabled *bool `json:"enabled"`
		}
		dec := json.NewDecoder(io.LimitReader(r.Body, 1024))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || req.Enabled == nil {
			return nil, fmt.Errorf("%w: want {\"enabled\": true|false}", api.ErrInvalid)
		}
		return d.setFastPath(r.Context(), *req.Enabled)
	})
}

// listenerList serves GET /v1/listeners.
func (d *Daemon) listenerList(host string) ([]api.Listener, error) {
	return onHost(d.listeners, "listener", host, func(l api.Listener) string { return l.Host },
		func(a, b api.Listener) int { return cmp.Or(a.VIP.Compare(b.VIP), cmp.Compare(a.Port, b.Port)) })
}

// fastPathStatus serves GET /v1/fastpath.
func (d *Daemon) fastPathStatus() api.FastPathStatus {
	st := api.FastPathStatus{Enabled: d.view.switchOn(), Active: d.fp.FastPath(), BPF: d.bpf != nil, Sessions: d.broker.Sessions()}
	if d.bpf != nil {
		if b, err := d.bpf.PortBlocks(); err == nil {
			st.BPFPortBlocks = len(b)
		}
		if l, err := d.bpf.Listeners(); err == nil {
			st.BPFListeners = len(l)
		}
	}
	return st
}

// setFastPath serves PUT /v1/fastpath and waits (bounded by ctx) until
// the local cache has the new value, so the answer reflects it.
func (d *Daemon) setFastPath(ctx context.Context, enabled bool) (api.FastPathStatus, error) {
	rev, err := d.store.SetFastPath(ctx, enabled)
	if err != nil {
		return api.FastPathStatus{}, err
	}
	if err := d.fpSwitch.WaitRev(ctx, rev); err != nil {
		return api.FastPathStatus{}, err
	}
	return d.fastPathStatus(), nil
}

// policyRoutes adds the network policy and namespace routes.
func (d *Daemon) policyRoutes(srv *api.Server) {
	srv.Handle("GET /v1/policies", func(r *http.Request) (any, error) { return d.policyList(), nil })
	srv.Handle("PUT /v1/policies", func(r *http.Request) (any, error) {
		var req api.Policies
		if err := api.Decode(r, &req); err != nil {
			return nil, err
		}
		return d.applyPolicies(r.Context(), req.Policies)
	})
	srv.Handle("DELETE /v1/policies/{namespace}/{name}", func(r *http.Request) (any, error) {
		rev, err := d.store.DeletePolicy(r.Context(), r.PathValue("namespace"), r.PathValue("name"))
		if err != nil {
			return nil, apiError(err)
		}
		return struct{}{}, d.pols.WaitRev(r.Context(), rev)
	})
	srv.Handle("GET /v1/policies/explain", func(r *http.Request) (any, error) {
		q := r.URL.Query()
		src, err1 := netip.ParseAddr(q.Get("src"))
		dst, err2 := netip.ParseAddr(q.Get("dst"))
		port, err3 := strconv.ParseUint(q.Get("port"), 10, 16)
		proto := policy.Protocol(strings.ToUpper(cmp.Or(q.Get("proto"), "TCP")))
		if err := errors.Join(err1, err2, err3); err != nil || port == 0 {
			return nil, fmt.Errorf("%w: want src=IP&dst=IP&port=1-65535[&proto=TCP|UDP|SCTP]", api.ErrInvalid)
		}
		switch proto {
		case policy.ProtocolTCP, policy.ProtocolUDP, policy.ProtocolSCTP:
		default:
			return nil, fmt.Errorf("%w: protocol %q: want TCP, UDP or SCTP", api.ErrInvalid, proto)
		}
		return d.policies.explain(src, dst, uint16(port), proto), nil
	})
	srv.Handle("GET /v1/denials", func(r *http.Request) (any, error) { return d.policies.recent.list(), nil })
	srv.Handle("GET /v1/namespaces", func(r *http.Request) (any, error) { return d.namespaceList(), nil })
	srv.Handle("GET /v1/services", func(r *http.Request) (any, error) { return d.services.info(d.fp.listener), nil })
	srv.Handle("PUT /v1/services", func(r *http.Request) (any, error) {
		var req api.Services
		if err := api.Decode(r, &req); err != nil {
			return nil, err
		}
		return d.applyServices(r.Context(), req.Services)
	})
	srv.Handle("DELETE /v1/services/{namespace}/{name}", func(r *http.Request) (any, error) {
		rev, err := d.store.DeleteService(r.Context(), r.PathValue("namespace"), r.PathValue("name"))
		if err != nil {
			return nil, apiError(err)
		}
		if err := d.svcs.WaitRev(r.Context(), rev); err != nil {
			return nil, err
		}
		d.services.rebuild()
		return struct{}{}, nil
	})
	srv.Handle("PATCH /v1/endpoints/{id}/{ifname}/labels", func(r *http.Request) (any, error) {
		a, err := api.AttachmentFromPath(r)
		if err != nil {
			return nil, err
		}
		var req api.LabelChange
		if err := api.Decode(r, &req); err != nil {
			return nil, err
		}
		return d.labelEndpoint(r.Context(), a, req)
	})
	srv.Handle("PATCH /v1/namespaces/{name}", func(r *http.Request) (any, error) {
		var req api.NamespaceLabels
		if err := api.Decode(r, &req); err != nil {
			return nil, err
		}
		ns, rev, err := d.store.LabelNamespace(r.Context(), r.PathValue("name"), req)
		if err != nil {
			return nil, apiError(err)
		}
		return ns, d.nss.WaitRev(r.Context(), rev)
	})
}

// policyList serves GET /v1/policies, sorted by namespace and name.
func (d *Daemon) policyList() api.Policies {
	pols, _ := d.pols.Snapshot()
	out := api.Policies{Policies: []networkingv1.NetworkPolicy{}}
	for _, k := range slices.Sorted(maps.Keys(pols)) {
		out.Policies = append(out.Policies, pols[k])
	}
	return out
}

// applyPolicies serves PUT /v1/policies and waits (bounded by ctx) until
// this host enforces them.
func (d *Daemon) applyPolicies(ctx context.Context, ps []networkingv1.NetworkPolicy) (api.Policies, error) {
	rev, err := d.store.PutPolicies(ctx, ps)
	if err != nil {
		return api.Policies{}, apiError(err)
	}
	if err := d.pols.WaitRev(ctx, rev); err != nil {
		return api.Policies{}, err
	}
	d.policies.rebuild()
	return api.Policies{Policies: ps}, nil
}

// labelEndpoint serves PATCH /v1/endpoints/{id}/{ifname}/labels: it
// changes the labels of one of this host's endpoints (a pod's labels
// changed) and waits (bounded by ctx) until this host's policies follow;
// the other hosts follow through their watches.
func (d *Daemon) labelEndpoint(ctx context.Context, a api.Attachment, change api.LabelChange) (api.Endpoint, error) {
	ep, rev, err := d.store.LabelEndpoint(ctx, d.self.Name, a, change)
	if err != nil {
		return api.Endpoint{}, apiError(err)
	}
	if err := d.endpoints.WaitRev(ctx, rev); err != nil {
		return api.Endpoint{}, err
	}
	d.policies.rebuild()
	return ep, nil
}

// applyServices serves PUT /v1/services: all the services in one store
// transaction (an invalid one, or a cluster IP refused, changes nothing),
// then waits (bounded by ctx) until this host serves them.
func (d *Daemon) applyServices(ctx context.Context, svcs []corev1.Service) (api.Services, error) {
	for i := range svcs {
		if svcs[i].Namespace == "" {
			svcs[i].Namespace = api.DefaultNamespace
		}
	}
	stored, rev, err := d.store.PutServices(ctx, svcs, d.cfg.ServiceCIDR)
	if err != nil {
		return api.Services{}, apiError(err)
	}
	if err := d.svcs.WaitRev(ctx, rev); err != nil {
		return api.Services{}, err
	}
	d.services.rebuild()
	return api.Services{Services: stored}, nil
}

// namespaceList serves GET /v1/namespaces: the labelled ones and those
// endpoints are in, each with its implied name label.
func (d *Daemon) namespaceList() []api.Namespace {
	nss, _ := d.nss.Snapshot()
	names := map[string]bool{api.DefaultNamespace: true}
	for n := range nss {
		names[n] = true
	}
	d.endpoints.Range(func(_ string, ep api.Endpoint) bool {
		names[ep.Namespace()] = true
		return true
	})
	var out []api.Namespace
	for _, n := range slices.Sorted(maps.Keys(names)) {
		out = append(out, store.NamespaceOf(n, nss[n]))
	}
	return out
}
