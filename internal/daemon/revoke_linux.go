package daemon

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/broker"
	"github.com/slimnet/slim/internal/policy"
)

// revokeDelay gathers the changes of one policy update (the policy, then
// the caches that follow) into one pass.
const revokeDelay = 50 * time.Millisecond

// revokeGap is the least time between two passes. Every endpoint change
// recompiles the policies, and a pass walks every TCP socket of the host
// and its conntrack table: under a large cluster's churn (tens of changes
// a second) passes back to back took half a CPU. A denied connection is
// cut at most this much later.
const revokeGap = time.Second

// markRevoke asks for a revocation pass; it never blocks.
func (d *Daemon) markRevoke() {
	select {
	case d.revokeDirty <- struct{}{}:
	default:
	}
}

// runRevoke cuts, after each policy change, the live connections the
// policies now deny, until ctx ends.
func (d *Daemon) runRevoke(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.revokeDirty:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(revokeDelay):
		}
		d.revoke()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(revokeGap):
		}
	}
}

// revoke makes one pass: the fast path's host sockets of this host, the
// overlay sockets in the local containers' namespaces, and the conntrack
// entries of local endpoints (a flow cut there is judged again as new at
// its next packet, by the policy chain).
func (d *Daemon) revoke() {
	if d.policies.none() && !d.services.resetting() {
		return // nothing is denied, nothing asks for a reset
	}
	allow := d.policies.allowNow()
	n := map[string]int{}
	// One sock_diag walk for the policy's cuts and the services'.
	conns, err := d.fastPathSockets()
	if err != nil {
		d.log.Warn("revoke: listing fast-path connections", "err", err)
	}
	cut := map[any]bool{}
	for _, c := range revokedFastPath(conns, allow) {
		if err := broker.DestroyTCP(c.ref.(*netlink.Socket)); err != nil && !errors.Is(err, unix.ENOENT) {
			d.log.Warn("revoke: destroying a fast-path socket", "local", c.c.HostLocal, "remote", c.c.HostRemote, "err", err)
			continue
		}
		cut[c.ref] = true
		n["fastpath"]++
	}
	local := map[netip.Addr]bool{}
	for _, ep := range d.view.localEndpoints() {
		if !d.view.validEndpoint(ep) {
			continue
		}
		for _, a := range []netip.Addr{ep.IPv4, ep.IPv6} {
			if a.IsValid() {
				local[a] = true
			}
		}
		err := ns.WithNetNSPath(ep.Netns, func(ns.NetNS) error {
			socks, listening, err := containerSockets()
			if err != nil {
				return err
			}
			for _, s := range revokedSockets(socks, listening, allow) {
				if err := broker.DestroyTCP(s.ref.(*netlink.Socket)); err != nil && !errors.Is(err, unix.ENOENT) {
					return err
				}
				n["overlay"]++
			}
			return nil
		})
		if err != nil {
			d.log.Debug("revoke: container sockets", "container", ep.ContainerID, "err", err)
		}
	}
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		del, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, flowFilter(func(f *netlink.ConntrackFlow) bool {
			src, _ := netip.AddrFromSlice(f.Forward.SrcIP)
			dst, _ := netip.AddrFromSlice(f.Forward.DstIP)
			src, dst = src.Unmap(), dst.Unmap()
			if !local[src] && !local[dst] {
				return false
			}
			return !allow(src, netip.AddrPortFrom(dst, f.Forward.DstPort), policy.ProtocolOf(f.Forward.Protocol))
		}))
		if err != nil {
			d.log.Debug("revoke: conntrack", "err", err)
		}
		n["conntrack"] += int(del)
	}
	for path, k := range n {
		if k > 0 {
			d.metrics.revoked.WithLabelValues(path).Add(float64(k))
			d.log.Info("network policy: live connections cut", "path", path, "count", k)
		}
	}
	if err == nil && d.services.resetting() {
		d.resetServiceConns(conns, cut)
	}
}

// resetServiceConns cuts the fast-path client connections, made through a
// service that asks for it, whose backend has left the service or closed
// its listener (service.AnnotationBackendRemoval); those of cut are gone
// already.
func (d *Daemon) resetServiceConns(conns []fpConn, cut map[any]bool) {
	if d.bpf == nil {
		return
	}
	recs, err := d.bpf.Conns()
	if err != nil {
		d.log.Warn("service reset: connection records", "err", err)
		return
	}
	for _, fc := range conns {
		if fc.c.Role != "client" || fc.c.State == "TIME_WAIT" || cut[fc.ref] {
			continue
		}
		sk := fc.ref.(*netlink.Socket)
		svc, stale := d.services.stale(recs[bpf.ConnKey(broker.DiagKey(sk))].Peer, fc.c.VirtualRemote, d.fp.listener)
		if !stale {
			continue
		}
		if err := broker.DestroyTCP(sk); err != nil && !errors.Is(err, unix.ENOENT) {
			d.log.Warn("service reset: destroying a fast-path socket", "service", svc, "backend", fc.c.VirtualRemote, "err", err)
			continue
		}
		d.metrics.serviceResets.WithLabelValues(svc).Inc()
	}
}

// fastPathSockets lists this host's fast-path connections from sock_diag:
// host sockets bound to a port of a local endpoint's blocks (clients) or
// accepted on a local listener's host port (servers), with their virtual
// 4-tuples from the same tables the BPF programs use, and their sockets.
func (d *Daemon) fastPathSockets() ([]fpConn, error) {
	hosts, _ := d.hosts.Snapshot()
	ls, _ := d.listeners.Snapshot()
	t := newConnTable(d.self.UnderlayIP, d.cfg.PortBlockSize, ls)
	var socks []*netlink.Socket
	need := map[blockKey]bool{}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		ss, err := broker.DiagTCP(fam)
		if err != nil {
			return nil, err
		}
		for _, sk := range ss {
			if _, known := tcpStates[sk.State]; known { // not listeners, nor states newer than this list
				k := broker.DiagKey(sk)
				need[t.blockOf(k.Local)], need[t.blockOf(k.Remote)] = true, true
				socks = append(socks, sk)
			}
		}
	}
	t.addBlocks(hosts, d.endpoints.Range, need)
	var out []fpConn
	for _, sk := range socks {
		k := broker.DiagKey(sk)
		if c, ok := t.classify(k.Local, k.Remote, tcpStates[sk.State]); ok {
			out = append(out, fpConn{c: c, ref: sk})
		}
	}
	return out, nil
}

// containerSockets lists the TCP sockets of the calling thread's network
// namespace, and the ports it listens on.
func containerSockets() ([]sockTuple, map[uint16]bool, error) {
	var out []sockTuple
	listening := map[uint16]bool{}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := broker.DiagTCP(fam)
		if err != nil {
			return nil, nil, err
		}
		for _, sk := range socks {
			k := broker.DiagKey(sk)
			switch sk.State {
			case netlink.TCP_LISTEN:
				listening[k.Local.Port()] = true
			case netlink.TCP_TIME_WAIT, netlink.TCP_CLOSE:
			default:
				out = append(out, sockTuple{local: k.Local, remote: k.Remote, ref: sk})
			}
		}
	}
	return out, listening, nil
}

// flowFilter is a conntrack filter from a function.
type flowFilter func(*netlink.ConntrackFlow) bool

func (f flowFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool { return f(flow) }
