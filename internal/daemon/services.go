package daemon

import (
	"context"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/nat"
	"github.com/slimnet/slim/internal/policy"
	"github.com/slimnet/slim/internal/service"
	"github.com/slimnet/slim/internal/store"
)

// services holds the table of service ports and their backends, rebuilt
// whole when services or endpoints change, and read without locks at
// connect time.
type services struct {
	svcs      *store.Cache[corev1.Service]
	endpoints *store.Cache[api.Endpoint]
	valid     func(api.Endpoint) bool
	table     atomic.Pointer[service.Table]
	dirty     chan struct{}
	// changed is called after a rebuild (the packet filters follow).
	changed func()
	// picked counts a connect sent to a backend, by service (may be nil).
	picked func(service string)
}

func newServices(svcs *store.Cache[corev1.Service], endpoints *store.Cache[api.Endpoint], valid func(api.Endpoint) bool) *services {
	s := &services{svcs: svcs, endpoints: endpoints, valid: valid, dirty: make(chan struct{}, 1)}
	s.table.Store(service.Build(nil, nil))
	return s
}

// mark asks for a rebuild; it never blocks (the caches call it).
func (s *services) mark() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// run rebuilds after each mark until ctx ends, paced.
func (s *services) run(ctx context.Context) { rebuildLoop(ctx, s.dirty, s.rebuild) }

// rebuild builds the table from the services and the endpoints. Without
// services the endpoints are not read at all: a large cluster's every
// endpoint change would otherwise cost a pass over all of them.
func (s *services) rebuild() {
	svcs, _ := s.svcs.Snapshot()
	if len(svcs) == 0 {
		if len(s.table.Load().Fronts()) == 0 {
			return // empty, and still empty
		}
		s.table.Store(service.Build(nil, nil))
		if s.changed != nil {
			s.changed()
		}
		return
	}
	var valid []api.Endpoint // in no order: Build sorts each port's backends
	s.endpoints.Range(func(_ string, ep api.Endpoint) bool {
		if s.valid(ep) {
			valid = append(valid, ep)
		}
		return true
	})
	list := make([]corev1.Service, 0, len(svcs))
	for _, k := range slices.Sorted(maps.Keys(svcs)) {
		list = append(list, svcs[k])
	}
	s.table.Store(service.Build(list, valid))
	if s.changed != nil {
		s.changed()
	}
}

// rebuildLoop calls rebuild after each mark on dirty until ctx ends, and
// waits after each rebuild 4 times what it took, so that rebuilds take at
// most a fifth of a CPU however fast the changes come (as kube-proxy's
// minSyncPeriod bounds its syncs): in a small cluster a rebuild takes a
// millisecond and the wait is nothing; at 200,000 endpoints a change
// waits up to a second for the next one.
func rebuildLoop(ctx context.Context, dirty <-chan struct{}, rebuild func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-dirty:
		}
		start := time.Now()
		rebuild()
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(4*time.Since(start), maxPace)):
		}
	}
}

// maxPace bounds rebuildLoop's wait.
const maxPace = 2 * time.Second

// dnat is the services' DNAT for clients the fast path does not carry:
// every service port with its backends, each backend as its virtual
// address and target port, except one listening on this host's fast
// path, which is its host listener itself (the second DNAT, the
// listener's, would not happen on the host that made the first).
func (s *services) dnat(self string, ls map[string]api.Listener, valid func(api.Listener) bool) []nat.Service {
	t := s.table.Load()
	var out []nat.Service
	for _, f := range t.Fronts() {
		p, _ := t.Lookup(f)
		proto, _ := policy.Protocol(f.Protocol).Number() // TCP or UDP: Validate allows no other
		ns := nat.Service{VIP: f.VIP, Proto: proto, Port: f.Port}
		for _, b := range p.Backends {
			if l, ok := ls[store.ListenerKey(b.Addr(), b.Port())]; ok && proto == unix.IPPROTO_TCP && l.Host == self && valid(l) {
				b = netip.AddrPortFrom(l.HostIP, l.HostPort)
			}
			ns.Backends = append(ns.Backends, b)
		}
		out = append(out, ns)
	}
	return out
}

// pick chooses the backend of a TCP connect to vip:port, if it is a
// service port: at random among the backends that have a published
// listener (listener says which), each connect on its own, as Cilium's
// socket load balancer does; a client's connections spread over every
// backend, and a backend that goes away is left out at the next connect.
// isService is false when vip:port is no service's.
func (s *services) pick(vip netip.Addr, port uint16, listener func(netip.Addr, uint16) (api.Listener, bool)) (l api.Listener, ok, isService bool) {
	p, found := s.table.Load().Lookup(service.Front{VIP: vip, Port: port, Protocol: corev1.ProtocolTCP})
	if !found {
		return api.Listener{}, false, false
	}
	var buf [16]api.Listener
	live := buf[:0]
	for _, b := range p.Backends {
		if l, ok := listener(b.Addr(), b.Port()); ok {
			live = append(live, l)
		}
	}
	if len(live) == 0 {
		return api.Listener{}, false, true
	}
	if s.picked != nil {
		s.picked(p.Service)
	}
	return live[rand.IntN(len(live))], true, true
}

// resetting reports whether some service asks for the connections of a
// removed backend to be cut (service.AnnotationBackendRemoval).
func (s *services) resetting() bool { return s.table.Load().Resets() }

// stale reports whether a client connection that named peer (a service's
// TCP port, to the service's resetting kind) and went to backend should be
// cut: the backend has left the service or closed its listener. It
// returns the service's name.
func (s *services) stale(peer, backend netip.AddrPort, listener func(netip.Addr, uint16) (api.Listener, bool)) (string, bool) {
	p, ok := s.table.Load().Lookup(service.Front{VIP: peer.Addr().Unmap(), Port: peer.Port(), Protocol: corev1.ProtocolTCP})
	if !ok || !p.Reset {
		return "", false
	}
	if _, listening := listener(backend.Addr(), backend.Port()); listening && slices.Contains(p.Backends, backend) {
		return "", false
	}
	return p.Service, true
}

// of names the service whose TCP port ap is, or "".
func (s *services) of(ap netip.AddrPort) string {
	if p, ok := s.table.Load().Lookup(service.Front{VIP: ap.Addr().Unmap(), Port: ap.Port(), Protocol: corev1.ProtocolTCP}); ok {
		return p.Service
	}
	return ""
}

// info lists the services for the API: each with its ports and the
// number of backends per port that have a published listener.
func (s *services) info(listener func(netip.Addr, uint16) (api.Listener, bool)) []api.ServiceInfo {
	svcs, _ := s.svcs.Snapshot()
	t := s.table.Load()
	out := []api.ServiceInfo{}
	for _, k := range slices.Sorted(maps.Keys(svcs)) {
		svc := svcs[k]
		vip, _ := netip.ParseAddr(svc.Spec.ClusterIP)
		si := api.ServiceInfo{Namespace: svc.Namespace, Name: svc.Name, ClusterIP: vip}
		for _, sp := range svc.Spec.Ports {
			proto := service.Protocol(sp.Protocol)
			pi := api.ServicePortInfo{Name: sp.Name, Port: uint16(sp.Port), Protocol: string(proto), TargetPort: sp.TargetPort.String()}
			if p, ok := t.Lookup(service.Front{VIP: vip, Port: uint16(sp.Port), Protocol: proto}); ok {
				pi.Backends = len(p.Backends)
				for _, b := range p.Backends {
					if _, ok := listener(b.Addr(), b.Port()); ok {
						pi.Listening++
					}
				}
			}
			si.Ports = append(si.Ports, pi)
		}
		out = append(out, si)
	}
	return out
}
