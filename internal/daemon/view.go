package daemon

import (
	"net/netip"
	"slices"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// view is what this host reads of the store: the watch-fed caches, checked
// by the validator before use, and its own host record and lease, which
// it knows without the cache.
type view struct {
	self      api.Host
	lease     func() clientv3.LeaseID
	hosts     *store.Cache[api.Host]
	endpoints *store.Cache[api.Endpoint]
	listeners *store.Cache[api.Listener]
	fpSwitch  *store.Cache[store.FastPath]
	valid     *validator
}

// host implements records: the cached host record and its lease. This
// host's own record is known without the cache, which may not have synced
// yet when the endpoints' has.
func (v *view) host(name string) (api.Host, int64, bool) {
	if name == v.self.Name {
		return v.self, int64(v.lease()), true
	}
	h, ok := v.hosts.Get(name)
	return h, v.hosts.Lease(name), ok
}

// hostRecord is host without the lease, for the endpoint checks.
func (v *view) hostRecord(name string) (api.Host, bool) {
	h, _, ok := v.host(name)
	return h, ok
}

// listenerLease implements records.
func (v *view) listenerLease(key string) int64 { return v.listeners.Lease(key) }

func (v *view) validListener(l api.Listener) bool  { return v.valid.listener(l, v) }
func (v *view) validEndpoint(ep api.Endpoint) bool { return v.valid.endpoint(ep, v.hostRecord) }

// localEndpoints are this host's endpoints, read without copying the
// whole cache.
func (v *view) localEndpoints() []api.Endpoint {
	var out []api.Endpoint
	v.endpoints.Range(func(_ string, ep api.Endpoint) bool {
		if ep.Host == v.self.Name {
			out = append(out, ep)
		}
		return true
	})
	return out
}

// switchOn is the cluster-wide fast-path switch: on unless set off.
func (v *view) switchOn() bool {
	s, ok := v.fpSwitch.Get("")
	return !ok || s.Enabled
}

// synced: every cache has listed the store once.
func (v *view) synced() bool {
	return v.hosts.Synced() && v.endpoints.Synced() && v.listeners.Synced()
}

// otherHosts are the underlay addresses of every other valid host, sorted.
func (v *view) otherHosts() []netip.Addr {
	var out []netip.Addr
	v.hosts.Range(func(_ string, h api.Host) bool {
		if h.Name != v.self.Name && v.valid.host(h) {
			out = append(out, h.UnderlayIP)
		}
		return true
	})
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
