package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/nat"
	"github.com/slimnet/slim/internal/service"
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
	// idx is what the BPF maps should hold, and the listeners by host,
	// kept from the caches' changes: a pass costs what changed, not what
	// the cluster holds.
	idx *addrIndex
	// What the last pass applied, to tell whether the policies or the
	// services changed since; guarded: some listener's host port is
	// guarded by policy (its filter then follows every endpoint).
	lastPol *policyState
	lastSvc *service.Table
	guarded bool
	// retry: a sync failed, the next pass does everything.
	retry bool
	// restored: the predecessor's listeners are taken over. Until then the
	// tables must not follow a store that may have lost records while
	// slimd was away.
	restored atomic.Bool
}

func newHostTables(v *view, t *nat.Table, maps addrMaps, guard nat.Guard, resync time.Duration, log *slog.Logger) *hostTables {
	return &hostTables{v: v, nat: t, maps: maps, guard0: guard, resync: resync, log: log, dirty: make(chan struct{}, 1),
		idx: newAddrIndex(v)}
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

// pass brings the tables to the caches' state, touching only what the
// changes since the last pass can have changed; full recomputes and
// rewrites everything, reading the BPF maps back instead of trusting what
// earlier passes wrote.
func (h *hostTables) pass(full bool) {
	full = full || h.retry
	h.retry = false
	// The index is kept exactly by the changes (TestAddrIndexFollowsChanges);
	// only a cache that listed everything again has it rebuilt.
	d := h.idx.update()
	full = full || d.rebuilt
	check := func(what string, err error) {
		if err != nil {
			h.log.Warn(what+" sync failed", "err", err)
			h.retry = true
		}
	}
	self := h.v.self.Name
	var local map[string]api.Listener // this host's listeners, read when needed
	locals := func() map[string]api.Listener {
		if local == nil {
			local = h.idx.listenersOn(self)
		}
		return local
	}
	if full || d.local {
		check("dnat", h.nat.Sync(dnatRules(self, locals(), h.v.validListener)))
	}
	var others []netip.Addr
	if full || d.hosts {
		others = h.v.otherHosts()
		check("control-plane guard", h.nat.SyncGuard(h.guard(others)))
	}
	if h.pol != nil {
		ps := h.pol.state.Load()
		polChanged := ps != h.lastPol
		h.lastPol = ps
		if full || polChanged {
			check("network policy filter", h.nat.SyncPolicy(h.pol.filter()))
		}
		if full || polChanged || d.hosts || d.local || (d.endpoints && h.guarded) {
			if others == nil {
				others = h.v.otherHosts()
			}
			hp := h.pol.hostPorts(h.v, others, locals(), h.v.endpoints.Range, h.ports)
			hp.Slimd = h.slimd
			check("host port filter", h.nat.SyncHostPorts(hp))
			h.guarded = len(hp.Guarded) > 0
		}
	}
	if h.svc != nil {
		t := h.svc.table.Load()
		if full || t != h.lastSvc || d.local {
			check("service dnat", h.nat.SyncServices(h.svc.dnat(self, locals(), h.v.validListener)))
		}
		h.lastSvc = t
	}
	if h.maps != nil {
		check("bpf map", h.idx.flush(h.maps, full))
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
// ports, on every other valid host (others) and store member.
func (h *hostTables) guard(others []netip.Addr) nat.Guard {
	g := h.guard0
	g.Hosts = append(append([]netip.Addr(nil), h.guard0.Hosts...), others...)
	return g
}
