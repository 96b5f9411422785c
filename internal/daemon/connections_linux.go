package daemon

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/broker"
	"golang.org/x/sys/unix"
)

// tcpStates names TCP states as sock_diag numbers them.
var tcpStates = [...]string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
	"TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING"}

// connections lists this host's fast-path connections from sock_diag: host
// sockets bound to a port of a local endpoint's blocks (clients) or
// accepted on a local listener's host port (servers), with their virtual
// 4-tuples from the same tables the BPF programs use.
func (f *fastPath) connections() ([]api.Connection, error) {
	self := f.d.self
	eps, _ := f.d.endpoints.Snapshot()
	hosts, _ := f.d.hosts.Snapshot()
	ls, _ := f.d.listeners.Snapshot()
	type hp struct {
		ip    netip.Addr
		block uint16
	}
	mask := ^(f.d.cfg.PortBlockSize - 1)
	// A client's port block says which of its addresses it shows (IPv6
	// blocks serve connections to IPv6 addresses), and so which of a host
	// listener's two virtual addresses the connection is to.
	type block struct {
		ep api.Endpoint
		v6 bool
	}
	vip := func(b block) netip.Addr {
		if b.v6 {
			return b.ep.IPv6
		}
		return b.ep.IPv4
	}
	blocks := map[hp]block{}
	for _, ep := range eps {
		h, ok := hosts[ep.Host]
		if !ok {
			continue
		}
		for _, b := range ep.PortBlocks {
			blocks[hp{h.UnderlayIP, b.Start}] = block{ep, b.IPv6}
		}
	}
	type lk struct {
		host netip.AddrPort
		v6   bool
	}
	lst := map[lk]api.Listener{}
	for _, l := range ls {
		lst[lk{netip.AddrPortFrom(l.HostIP, l.HostPort), bpf.IsIPv6(l.VIP)}] = l
	}
	listener := func(host netip.AddrPort, v6 bool) (api.Listener, bool) {
		if l, ok := lst[lk{host, v6}]; ok {
			return l, true
		}
		l, ok := lst[lk{host, !v6}]
		return l, ok
	}
	var since map[bpf.ConnKey]time.Time
	if f.d.bpf != nil {
		var err error
		if since, err = f.d.bpf.ConnsSince(); err != nil {
			f.d.log.Debug("connections: no connect times", "err", err)
		}
	}
	var out []api.Connection
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := broker.DiagTCP(fam)
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for _, sk := range socks {
			if int(sk.State) >= len(tcpStates) || tcpStates[sk.State] == "LISTEN" {
				continue
			}
			k := broker.DiagKey(sk)
			if k.Local.Addr() != self.UnderlayIP {
				continue
			}
			c := api.Connection{HostLocal: k.Local, HostRemote: k.Remote, State: tcpStates[sk.State]}
			peer, fromBlock := blocks[hp{k.Remote.Addr(), k.Remote.Port() & mask}]
			if b, ok := blocks[hp{k.Local.Addr(), k.Local.Port() & mask}]; ok {
				c.Role, c.Container = "client", b.ep.ContainerID
				c.VirtualLocal = netip.AddrPortFrom(vip(b), k.Local.Port())
				if l, ok := listener(k.Remote, b.v6); ok {
					c.VirtualRemote = netip.AddrPortFrom(l.VIP, l.Port)
				}
				c.Since = since[bpf.ConnKey(k)]
			} else if l, ok := listener(k.Local, fromBlock && peer.v6); ok {
				c.Role, c.Container = "server", l.ContainerID
				c.VirtualLocal = netip.AddrPortFrom(l.VIP, l.Port)
				c.VirtualRemote = k.Remote // an overlay client (DNAT) shows its own address
				if fromBlock {
					c.VirtualRemote = netip.AddrPortFrom(vip(peer), k.Remote.Port())
				}
			} else {
				continue
			}
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b api.Connection) int {
		return cmp.Or(cmp.Compare(a.Container, b.Container), a.VirtualLocal.Compare(b.VirtualLocal), a.HostLocal.Compare(b.HostLocal))
	})
	return out, nil
}

// fastPathStatus serves GET /v1/fastpath.
func (f *fastPath) fastPathStatus() api.FastPathStatus {
	v, ok := f.d.fpSwitch.Get("")
	enabled := !ok || v.Enabled
	st := api.FastPathStatus{Enabled: enabled, Active: f.FastPath(), BPF: f.d.bpf != nil, Sessions: f.d.broker.Sessions()}
	if f.d.bpf != nil {
		if b, err := f.d.bpf.PortBlocks(); err == nil {
			st.BPFPortBlocks = len(b)
		}
		if l, err := f.d.bpf.Listeners(); err == nil {
			st.BPFListeners = len(l)
		}
	}
	return st
}

// setFastPath serves PUT /v1/fastpath and waits (bounded by ctx) until
// the local cache has the new value, so the answer reflects it.
func (f *fastPath) setFastPath(ctx context.Context, enabled bool) (api.FastPathStatus, error) {
	rev, err := f.d.store.SetFastPath(ctx, enabled)
	if err != nil {
		return api.FastPathStatus{}, err
	}
	if err := f.d.fpSwitch.WaitRev(ctx, rev); err != nil {
		return api.FastPathStatus{}, err
	}
	return f.fastPathStatus(), nil
}
