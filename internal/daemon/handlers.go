package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/slimnet/slim/internal/api"
)

// routes adds the local API's routes beyond the backend's (api.Backend).
func (d *Daemon) routes(srv *api.Server) {
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
