package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/nat"
	"github.com/slimnet/slim/internal/store"
)

// hostTables keeps this host's kernel tables equal to the store: the DNAT
// table (local listeners, for overlay clients), the control-plane guard,
// and the BPF address maps (every port block and listener).
type hostTables struct {
	v      *view
	nat    *nat.Table
	maps   addrMaps // nil without the BPF programs
	guard0 nat.Guard
	// pol is network policy (nil: none): the filter for routed traffic,
	// and who may reach the fast path's host ports.
	pol *policies
	// svc is the services (nil: none): their DNAT for clients the fast
	// path does not carry.
	svc *services
	// ports is the fast path's host port range (client blocks).
	ports store.BlockRange
	// slimd is slimd's cgroup: the fast path's host sockets are its.
	slimd  nat.Cgroup
	resync time.Duration
	log    *slog.Logger

	dirty chan struct{}
	// applied is what the last successful pass left in the BPF maps (nil:
	// unknown, read them back); a pass for a change writes only the
	// difference, the periodic one reads the maps back and repairs them.
	applied *bpfState
	// restored: the predecessor's listeners are taken over. Until then the
	// tables must not follow a store that may have lost records while
	// slimd was away.
	restored atomic.Bool
}

func newHostTables(v *view, t *nat.Table, maps addrMaps, guard nat.Guard, resync time.Duration, log *slog.Logger) *hostTables {
	return &hostTables{v: v, nat: t, maps: maps, guard0: guard, resync: resync, log: log, dirty: make(chan struct{}, 1)}
}

// mark asks for a pass soon.
func (h *hostTables) mark() {
	select {
	case h.dirty <- struct{}{}:
	default:
	}
}

// run makes a pass when marked and every resync interval, once restored
// and the caches synced.
func (h *hostTables) run(ctx context.Context) error {
	t := time.NewTicker(h.resync)
	defer t.Stop()
	full := true
	for {
		if h.restored.Load() && h.v.synced() {
			h.pass(full)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-h.dirty:
			full = false
		case <-t.C:
			full = true
		}
	}
}

// pass brings the tables to the caches' state; full reads the BPF maps
// back instead of trusting what the last pass wrote.
func (h *hostTables) pass(full bool) {
	// One snapshot of each cache for the whole pass.
	hosts, _ := h.v.hosts.Snapshot()
	eps, _ := h.v.endpoints.Snapshot()
	ls, _ := h.v.listeners.Snapshot()
	if err := h.nat.Sync(dnatRules(h.v.self.Name, ls, h.v.validListener)); err != nil {
		h.log.Warn("dnat sync failed", "err", err)
	}
	if err := h.nat.SyncGuard(h.guard(hosts)); err != nil {
		h.log.Warn("control-plane guard sync failed", "err", err)
	}
	if h.pol != nil {
		if err := h.nat.SyncPolicy(h.pol.filter()); err != nil {
			h.log.Warn("network policy filter sync failed", "err", err)
		}
		hp := h.pol.hostPorts(h.v, hosts, eps, ls, h.ports)
		hp.Slimd = h.slimd
		if err := h.nat.SyncHostPorts(hp); err != nil {
			h.log.Warn("host port filter sync failed", "err", err)
		}
	}
	if h.svc != nil {
		if err := h.nat.SyncServices(h.svc.dnat(h.v.self.Name, ls, h.v.validListener)); err != nil {
			h.log.Warn("service dnat sync failed", "err", err)
		}
	}
	if h.maps == nil {
		return
	}
	want := desiredBPF(hosts, eps, ls, h.v.validEndpoint, h.v.validListener)
	var err error
	if full || h.applied == nil {
		err = want.apply(h.maps)
	} else {
		err = want.applyDiff(*h.applied, h.maps)
	}
	h.applied = &want
	if err != nil {
		h.applied = nil // read back next time
		h.log.Warn("bpf map sync failed", "err", err)
	}
}

// dnatRules are the DNAT rules for host's valid listeners.
func dnatRules(host string, ls map[string]api.Listener, valid func(api.Listener) bool) []nat.Rule {
	var rules []nat.Rule
	for _, l := range ls {
		if l.Host != host || !valid(l) {
			continue
		}
		hostIP := l.HostIP
		if l.VIP.Is6() {
			// The host listener is dual stack on the v4 underlay: IPv6
			// overlay clients are translated to its v4-mapped address.
			hostIP = netip.AddrFrom16(l.HostIP.As16())
		}
		rules = append(rules, nat.Rule{VIP: l.VIP, Port: l.Port, HostIP: hostIP, HostPort: l.HostPort})
	}
	return rules
}

// guard is the control-plane guard for this host now: the configured
// ports, on every other valid host and store member.
func (h *hostTables) guard(hosts map[string]api.Host) nat.Guard {
	g := h.guard0
	g.Hosts = append([]netip.Addr(nil), h.guard0.Hosts...)
	for _, o := range hosts {
		if o.Name != h.v.self.Name && h.v.valid.host(o) {
			g.Hosts = append(g.Hosts, o.UnderlayIP)
		}
	}
	return g
}
