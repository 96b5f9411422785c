package daemon

import (
	"net/netip"

	"github.com/slimnet/slim/internal/api"
)

// connTable maps host 4-tuples back to virtual ones, from the same records
// the BPF programs use: a client's host port lies in one of its
// endpoint's port blocks, a server's host port is a listener's.
type connTable struct {
	self      netip.Addr // this host's underlay IP
	mask      uint16     // clears a port's offset in its block
	blocks    map[blockKey]tableBlock
	listeners map[mapListenerKey]api.Listener
}

// tableBlock is a block's endpoint and family: IPv6 blocks serve
// connections to IPv6 addresses, so the block also says which of a host
// listener's two virtual addresses a connection is to.
type tableBlock struct {
	ep api.Endpoint
	v6 bool
}

func (b tableBlock) vip() netip.Addr {
	if b.v6 {
		return b.ep.IPv6
	}
	return b.ep.IPv4
}

// newConnTable returns a table of the listeners ls; addBlocks adds the
// endpoints' port blocks.
func newConnTable(self netip.Addr, blockSize uint16, ls map[string]api.Listener) *connTable {
	t := &connTable{self: self, mask: ^(blockSize - 1), blocks: map[blockKey]tableBlock{}, listeners: map[mapListenerKey]api.Listener{}}
	for _, l := range ls {
		k, _ := listenerEntry(l)
		t.listeners[k] = l
	}
	return t
}

// addBlocks adds the port blocks of the endpoints eps ranges over, only
// those in need unless need is nil: a host's sockets name a few of the
// cluster's 200,000 blocks (docs/scale.md).
func (t *connTable) addBlocks(hosts map[string]api.Host, eps func(func(string, api.Endpoint) bool), need map[blockKey]bool) {
	eps(func(_ string, ep api.Endpoint) bool {
		h, ok := hosts[ep.Host]
		if !ok {
			return true
		}
		for _, b := range ep.PortBlocks {
			if k := newBlockKey(h.UnderlayIP, b.Start); need == nil || need[k] {
				t.blocks[k] = tableBlock{ep, b.IPv6}
			}
		}
		return true
	})
}

// blockOf is the key of the block port a would lie in.
func (t *connTable) blockOf(a netip.AddrPort) blockKey {
	return newBlockKey(a.Addr(), a.Port()&t.mask)
}

func (t *connTable) block(a netip.AddrPort) (tableBlock, bool) {
	b, ok := t.blocks[t.blockOf(a)]
	return b, ok
}

// listener finds the listener on host port a, preferring the entry of
// family v6.
func (t *connTable) listener(a netip.AddrPort, v6 bool) (api.Listener, bool) {
	if l, ok := t.listeners[mapListenerKey{a, v6}]; ok {
		return l, true
	}
	l, ok := t.listeners[mapListenerKey{a, !v6}]
	return l, ok
}

// classify turns one host socket of this host into a fast-path connection,
// or false if it is not one.
func (t *connTable) classify(local, remote netip.AddrPort, state string) (api.Connection, bool) {
	if local.Addr() != t.self {
		return api.Connection{}, false
	}
	c := api.Connection{HostLocal: local, HostRemote: remote, State: state}
	peer, fromBlock := t.block(remote)
	if b, ok := t.block(local); ok {
		c.Role, c.Container = "client", b.ep.ContainerID
		c.VirtualLocal = netip.AddrPortFrom(b.vip(), local.Port())
		if l, ok := t.listener(remote, b.v6); ok {
			c.VirtualRemote = netip.AddrPortFrom(l.VIP, l.Port)
		}
		return c, true
	}
	l, ok := t.listener(local, fromBlock && peer.v6)
	if !ok {
		return api.Connection{}, false
	}
	c.Role, c.Container = "server", l.ContainerID
	c.VirtualLocal = netip.AddrPortFrom(l.VIP, l.Port)
	c.VirtualRemote = remote // an overlay client (DNAT) shows its own address
	if fromBlock {
		c.VirtualRemote = netip.AddrPortFrom(peer.vip(), remote.Port())
	}
	return c, true
}
