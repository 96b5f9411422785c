package daemon

import (
	"context"
	"net/netip"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/broker"
	"github.com/slimnet/slim/internal/store"
)

// restore loads what a previous slimd left: listener blocks and the ports
// of listeners still published for this host (their host sockets live on
// in the containers).
func (f *fastPath) restore(ctx context.Context) error {
	blocks, err := f.store.PortBlocks(ctx, f.v.self.Name)
	if err != nil {
		return err
	}
	for start, owner := range blocks {
		if owner == store.ListenerOwner {
			f.lports.addBlock(api.PortBlock{Start: start, Size: f.blocks.Size})
		}
	}
	ls, _ := f.v.listeners.Snapshot()
	for _, l := range ls {
		if l.Host == f.v.self.Name {
			f.lports.use(l.HostPort)
		}
	}
	return nil
}

// restoreListeners takes over the listeners a predecessor left: those the
// store still lists for this host, and those only the pinned BPF map
// remembers (their records expired with an old lease) whose host socket is
// still listening; the latter are published again. owned is what that
// map held at start; take hands each listener to the broker.
func (f *fastPath) restoreListeners(ctx context.Context, owned []bpf.Listener, take func(api.Listener)) error {
	ls, _ := f.v.listeners.Snapshot()
	have := map[netip.AddrPort]bool{}
	for _, l := range ls {
		if l.Host == f.v.self.Name {
			take(l)
			have[netip.AddrPortFrom(l.VIP, l.Port)] = true
		}
	}
	if len(owned) == 0 {
		return nil
	}
	open, err := broker.OpenListenPorts()
	if err != nil {
		return err
	}
	byVIP := map[netip.Addr]api.Endpoint{}
	for _, ep := range f.v.localEndpoints() {
		byVIP[ep.IPv4] = ep
		if ep.IPv6.IsValid() {
			byVIP[ep.IPv6] = ep
		}
	}
	for _, l := range orphanListeners(f.v.self.Name, owned, have, open, byVIP) {
		if _, err := f.store.PutListener(ctx, l, f.v.lease()); err != nil {
			return err
		}
		take(l)
		f.lports.use(l.HostPort)
		f.log.Info("listener re-published after its record expired", "vip", netip.AddrPortFrom(l.VIP, l.Port), "hostPort", l.HostPort)
	}
	return nil
}

// orphanListeners are the listeners of owned (what the pinned BPF map of
// a predecessor held) to publish again for host: those the store no
// longer has (have), whose host port is still listening (open), and whose
// virtual address is still a local endpoint's (byVIP).
func orphanListeners(host string, owned []bpf.Listener, have map[netip.AddrPort]bool, open map[uint16]bool, byVIP map[netip.Addr]api.Endpoint) []api.Listener {
	var out []api.Listener
	for _, o := range owned {
		ep, ok := byVIP[o.VIP.Addr()]
		if have[o.VIP] || !open[o.HostPort] || !ok {
			continue
		}
		out = append(out, api.Listener{VIP: o.VIP.Addr(), Port: o.VIP.Port(), Host: host, HostIP: o.HostIP, HostPort: o.HostPort,
			ContainerID: ep.ContainerID, IfName: ep.IfName})
	}
	return out
}
