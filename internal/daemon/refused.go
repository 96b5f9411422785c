package daemon

import (
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/store"
)

// maxRefusals bounds the refusals remembered (for logging each once).
const maxRefusals = 4096

// validator checks store records before slimd acts on them (store.Limits)
// and reports each refused record once per distinct reason: logged at
// Warn and counted in slim_store_records_refused_total{kind}.
type validator struct {
	lim     store.Limits
	log     *slog.Logger
	refused *prometheus.CounterVec

	mu   sync.Mutex
	seen map[string]string // kind/key -> the reason last reported
}

func newValidator(lim store.Limits, log *slog.Logger, refused *prometheus.CounterVec) *validator {
	return &validator{lim: lim, log: log, refused: refused, seen: map[string]string{}}
}

// report records the verdict on one record and returns whether it may be
// used.
func (v *validator) report(kind, key string, err error) bool {
	k := kind + "/" + key
	v.mu.Lock()
	defer v.mu.Unlock()
	if err == nil {
		delete(v.seen, k)
		return true
	}
	if v.seen[k] != err.Error() {
		if len(v.seen) >= maxRefusals {
			clear(v.seen)
		}
		v.seen[k] = err.Error()
		v.refused.WithLabelValues(kind).Inc()
		v.log.Warn("store record refused", "kind", kind, "key", key, "err", err)
	}
	return false
}

// host reports whether a host record may be used.
func (v *validator) host(h api.Host) bool {
	return v.report("host", h.Name, v.lim.Host(h))
}

// records is what the listener check reads besides the record: the host
// records and the leases of both kinds of record.
type records interface {
	host(name string) (api.Host, int64, bool)
	listenerLease(key string) int64
}

// listener reports whether a listener record may be used, judged against
// the host record it names.
func (v *validator) listener(l api.Listener, r records) bool {
	key := store.ListenerKey(l.VIP, l.Port)
	h, hostLease, ok := r.host(l.Host)
	return v.report("listener", key, v.lim.Listener(l, r.listenerLease(key), h, hostLease, ok))
}

// endpoint reports whether an endpoint record may be used, judged against
// its host's record.
func (v *validator) endpoint(ep api.Endpoint, hosts func(string) (api.Host, bool)) bool {
	h, ok := hosts(ep.Host)
	return v.report("endpoint", ep.Host+"/"+ep.ContainerID+"/"+ep.IfName, v.lim.Endpoint(ep, h, ok))
}
