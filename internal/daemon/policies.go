package daemon

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/nat"
	"github.com/slimnet/slim/internal/policy"
	"github.com/slimnet/slim/internal/store"
)

// policies keeps the compiled network policies current: a policy.Set and
// the endpoints by address, rebuilt off the connect path whenever the
// policies, the namespaces or the endpoints change, and swapped in whole.
// A connect reads both with two atomic loads and no lock.
type policies struct {
	pol       *store.Cache[networkingv1.NetworkPolicy]
	ns        *store.Cache[map[string]string]
	endpoints *store.Cache[api.Endpoint]
	valid     func(api.Endpoint) bool
	self      string // this host's name: its endpoints are the filter's
	log       *slog.Logger
	// changed is called after each rebuild (the packet filter follows).
	changed func()
	// recent are the latest denied connects, for slimctl.
	recent denials

	state atomic.Pointer[policyState]
	dirty chan struct{}
	// denied counts denied connections by direction and policy.
	denied func(direction, policy string)
}

// none reports whether no network policy is in force (nothing is denied).
func (p *policies) none() bool { return p.state.Load().policies == 0 }

type policyState struct {
	set *policy.Set
	// policies is how many policies set compiles: none deny nothing.
	policies int
	// local and all are the endpoints with their addresses, for the
	// packet filter.
	local, all []policy.Addressed
	byIP       map[netip.Addr]*policy.Endpoint
	// names are the endpoints by address, for explanations.
	names map[netip.Addr]string

	// decisions caches the connect decisions made with this state (a
	// pure function of it): a client connecting again and again to one
	// server costs one map lookup instead of weighing every policy that
	// selects either end (5 µs with 100 of them). A new state starts
	// with an empty cache.
	mu        sync.Mutex
	decisions map[decisionKey]policy.Decision
}

// decisionKey is one TCP connect's decision.
type decisionKey struct {
	src, dst netip.Addr
	port     uint16
}

// maxDecisions bounds a state's decision cache; a full cache starts over.
const maxDecisions = 1 << 16

// decideTCP decides a TCP connect, from the cache when it can.
func (s *policyState) decideTCP(src, dst netip.Addr, port uint16) policy.Decision {
	k := decisionKey{src.Unmap(), dst.Unmap(), port}
	s.mu.Lock()
	d, ok := s.decisions[k]
	s.mu.Unlock()
	if ok {
		return d
	}
	d = s.set.Decide(s.peer(src), s.peer(dst), port, policy.ProtocolTCP)
	s.mu.Lock()
	if s.decisions == nil || len(s.decisions) >= maxDecisions {
		s.decisions = make(map[decisionKey]policy.Decision)
	}
	s.decisions[k] = d
	s.mu.Unlock()
	return d
}

func newPolicies(self string, pol *store.Cache[networkingv1.NetworkPolicy], ns *store.Cache[map[string]string],
	endpoints *store.Cache[api.Endpoint], valid func(api.Endpoint) bool, denied func(direction, policy string), log *slog.Logger) *policies {
	p := &policies{self: self, pol: pol, ns: ns, endpoints: endpoints, valid: valid, denied: denied, log: log, dirty: make(chan struct{}, 1)}
	set, _ := policy.Compile(nil, nil)
	p.state.Store(&policyState{set: set, byIP: map[netip.Addr]*policy.Endpoint{}, names: map[netip.Addr]string{}})
	return p
}

// mark asks for a rebuild; it never blocks (the caches call it).
func (p *policies) mark() {
	select {
	case p.dirty <- struct{}{}:
	default:
	}
}

// run rebuilds after each mark until ctx ends, paced.
func (p *policies) run(ctx context.Context) { rebuildLoop(ctx, p.dirty, p.rebuild) }

// rebuild compiles the cached policies and indexes the endpoints. A
// policy the store holds was validated on write and on read, so Compile
// failing is a bug: the previous state stays and the error is logged.
func (p *policies) rebuild() {
	pols, _ := p.pol.Snapshot()
	list := make([]networkingv1.NetworkPolicy, 0, len(pols))
	for _, k := range slices.Sorted(maps.Keys(pols)) {
		list = append(list, pols[k])
	}
	nss, _ := p.ns.Snapshot()
	var namespaces []policy.Namespace
	for name, labels := range nss {
		namespaces = append(namespaces, policy.Namespace{Name: name, Labels: labels})
	}
	set, err := policy.Compile(list, namespaces)
	if err != nil {
		p.log.Error("network policies do not compile; the previous ones stay in force", "err", err)
		return
	}
	if len(list) == 0 {
		// No policy: nothing is denied and no endpoint needs indexing (a
		// large cluster's every endpoint change would cost a pass over
		// all of them); explanations look names up themselves.
		if s := p.state.Load(); s.policies == 0 && s.names == nil {
			return // none, and still none
		}
		p.state.Store(&policyState{set: set, byIP: map[netip.Addr]*policy.Endpoint{}})
		if p.changed != nil {
			p.changed()
		}
		return
	}
	var keys []string
	p.endpoints.Range(func(k string, _ api.Endpoint) bool {
		keys = append(keys, k)
		return true
	})
	slices.Sort(keys)
	byIP := make(map[netip.Addr]*policy.Endpoint, len(keys))
	names := make(map[netip.Addr]string, len(keys))
	var local, all []policy.Addressed
	for _, k := range keys {
		ep, ok := p.endpoints.Get(k)
		if !ok || !p.valid(ep) {
			continue
		}
		pe := policyEndpoint(ep)
		ad := policy.Addressed{Endpoint: pe}
		for _, a := range []netip.Addr{ep.IPv4, ep.IPv6} {
			if a.IsValid() {
				ad.Addrs = append(ad.Addrs, a)
			}
		}
		all = append(all, ad)
		if ep.Host == p.self {
			local = append(local, ad)
		}
		for _, a := range []netip.Addr{ep.IPv4, ep.IPv6} {
			if a.IsValid() {
				byIP[a] = pe
				names[a] = displayName(ep)
			}
		}
	}
	p.state.Store(&policyState{set: set, policies: len(list), byIP: byIP, names: names, local: local, all: all})
	if p.changed != nil {
		p.changed()
	}
}

// filter is what this host's packet filter enforces for routed traffic.
func (p *policies) filter() policy.Filter {
	s := p.state.Load()
	return s.set.Filter(s.local, s.all)
}

// policyEndpoint is what policies know of an endpoint.
func policyEndpoint(ep api.Endpoint) *policy.Endpoint {
	pe := &policy.Endpoint{Namespace: ep.Namespace(), Labels: ep.PodLabels()}
	for _, np := range ep.Ports {
		pe.Ports = append(pe.Ports, policy.NamedPort{Name: np.Name, Port: np.Port, Protocol: policy.Protocol(np.Protocol)})
	}
	return pe
}

// displayName is how explanations name an endpoint: namespace/name.
func displayName(ep api.Endpoint) string { return ep.Namespace() + "/" + endpointName(ep) }

// endpointName is how explanations name an endpoint: its pod name when a
// runtime gave one, else its container ID.
func endpointName(ep api.Endpoint) string {
	if n := ep.Labels[api.LabelPodName]; n != "" {
		return n
	}
	return ep.ContainerID
}

// peer is the policy side of an address.
func (s *policyState) peer(a netip.Addr) policy.Peer {
	a = a.Unmap()
	return policy.Peer{IP: a, Endpoint: s.byIP[a]}
}

// name is how an explanation names an address.
func (s *policyState) name(a netip.Addr) string {
	if n, ok := s.names[a.Unmap()]; ok {
		return n + " (" + a.Unmap().String() + ")"
	}
	return a.Unmap().String()
}

// AllowTCP implements broker.Policy: whether a TCP connection from src
// (a container's address) to dst is allowed, by the egress policies of
// src and the ingress policies of dst.
func (p *policies) AllowTCP(src netip.Addr, dst netip.AddrPort) bool {
	d := p.state.Load().decideTCP(src, dst.Addr(), dst.Port())
	if d.Allowed {
		return true
	}
	dn := api.Denial{Time: time.Now().UTC(), Source: src, Destination: dst, Direction: "ingress",
		Policy: firstOr(d.Ingress.Selecting, "")}
	if !d.Egress.Allowed {
		dn.Direction, dn.Policy = "egress", firstOr(d.Egress.Selecting, "")
	}
	if p.denied != nil {
		p.denied(dn.Direction, dn.Policy)
	}
	p.recent.add(dn)
	return false
}

// maxDenials is how many recent denials a host keeps for slimctl.
const maxDenials = 256

// denials is a ring of the latest denied connects.
type denials struct {
	mu   sync.Mutex
	ring []api.Denial
	next int
}

func (r *denials) add(d api.Denial) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ring) < maxDenials {
		r.ring = append(r.ring, d)
		return
	}
	r.ring[r.next] = d
	r.next = (r.next + 1) % maxDenials
}

// list returns the denials, oldest first.
func (r *denials) list() []api.Denial {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(append([]api.Denial{}, r.ring[r.next:]...), r.ring[:r.next]...)
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// explain serves the policy explain call.
func (p *policies) explain(src, dst netip.Addr, port uint16, proto policy.Protocol) api.PolicyExplanation {
	s := p.state.Load()
	d := s.set.Decide(s.peer(src), s.peer(dst), port, proto)
	name := s.name
	if s.names == nil { // no policy, no index: look the two up
		name = func(a netip.Addr) string {
			a = a.Unmap()
			n := a.String()
			p.endpoints.Range(func(_ string, ep api.Endpoint) bool {
				if (ep.IPv4 == a || ep.IPv6 == a) && p.valid(ep) {
					n = displayName(ep) + " (" + n + ")"
					return false
				}
				return true
			})
			return n
		}
	}
	out := api.PolicyExplanation{Allowed: d.Allowed, Explanation: d.Explain(name(src), name(dst))}
	for _, r := range slices.Concat(d.Egress.AllowedBy, d.Ingress.AllowedBy) {
		out.AllowedBy = append(out.AllowedBy, r.String())
	}
	return out
}

// hostPorts is who may reach this host's fast-path listener ports: a
// fast-path client's host socket, from a cluster host and a port of the
// client range; for a listener whose endpoint is isolated for ingress,
// only the port blocks whose owners its policies let in (the block names
// the client, whatever host it is on), and the blocks known at all (see
// nat.HostPorts.Guarded).
func (p *policies) hostPorts(v *view, others []netip.Addr, local map[string]api.Listener,
	endpoints func(func(string, api.Endpoint) bool), ports store.BlockRange) nat.HostPorts {
	s := p.state.Load()
	hp := nat.HostPorts{First: ports.First, Last: ports.Last, Hosts: append([]netip.Addr{v.self.UnderlayIP}, others...)}
	type guarded struct {
		hostPort, port uint16
		dst            policy.Peer
	}
	var gs []guarded
	for _, k := range slices.Sorted(maps.Keys(local)) {
		l := local[k]
		if l.Host != v.self.Name || !v.validListener(l) {
			continue
		}
		dst := s.peer(l.VIP)
		if dst.Endpoint == nil || !s.set.Decide(policy.Peer{}, dst, l.Port, policy.ProtocolTCP).Ingress.Isolated {
			hp.Open = append(hp.Open, l.HostPort)
			continue
		}
		hp.Guarded = append(hp.Guarded, l.HostPort)
		gs = append(gs, guarded{l.HostPort, l.Port, dst})
	}
	if len(gs) == 0 {
		// Nothing guarded: the port blocks do not matter, and reading
		// every endpoint would cost a pass what the cluster holds.
		return hp
	}
	// The port blocks, each with its owner as a policy peer.
	type src struct {
		host        netip.Addr
		first, last uint16
		peer        policy.Peer
	}
	var srcs []src
	endpoints(func(_ string, ep api.Endpoint) bool {
		h, ok := v.hostRecord(ep.Host)
		if !ok || !v.validEndpoint(ep) {
			return true
		}
		for _, b := range ep.PortBlocks {
			if a := ep.BlockVIP(b); a.IsValid() && b.Size > 0 {
				srcs = append(srcs, src{h.UnderlayIP, b.Start, b.Start + (b.Size - 1), s.peer(a)})
			}
		}
		return true
	})
	slices.SortFunc(srcs, func(a, b src) int { return cmp.Or(a.host.Compare(b.host), cmp.Compare(a.first, b.first)) })
	// Every known block, for the guarded ports: a known block they do not
	// allow gets a reset, an unknown one (not propagated yet) a drop.
	hp.Known = make([]nat.HostPortBlock, 0, len(srcs))
	for _, c := range srcs {
		hp.Known = append(hp.Known, nat.HostPortBlock{Host: c.host, First: c.first, Last: c.last})
	}
	for _, g := range gs {
		for _, c := range srcs {
			if s.set.Decide(c.peer, g.dst, g.port, policy.ProtocolTCP).Ingress.Allowed {
				hp.Allow = append(hp.Allow, nat.HostPortAllow{Port: g.hostPort, Host: c.host, First: c.first, Last: c.last})
			}
		}
	}
	return hp
}
