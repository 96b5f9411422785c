package daemon

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/broker"
	"github.com/vishvananda/netlink"
)

// tcpStates names the TCP states sock_diag reports.
var tcpStates = map[uint8]string{
	netlink.TCP_ESTABLISHED: "ESTABLISHED", netlink.TCP_SYN_SENT: "SYN_SENT", netlink.TCP_SYN_RECV: "SYN_RECV",
	netlink.TCP_FIN_WAIT1: "FIN_WAIT1", netlink.TCP_FIN_WAIT2: "FIN_WAIT2", netlink.TCP_TIME_WAIT: "TIME_WAIT",
	netlink.TCP_CLOSE: "CLOSE", netlink.TCP_CLOSE_WAIT: "CLOSE_WAIT", netlink.TCP_LAST_ACK: "LAST_ACK",
	netlink.TCP_CLOSING: "CLOSING", netlink.TCP_NEW_SYN_REC: "NEW_SYN_RECV",
}

// connections lists this host's fast-path connections (fastPathSockets),
// with the time each client was swapped in. Host
// sockets bound to a port of a local endpoint's blocks (clients) or
// accepted on a local listener's host port (servers), with their virtual
// 4-tuples from the same tables the BPF programs use.
func (d *Daemon) connections() ([]api.Connection, error) {
	fcs, err := d.fastPathSockets()
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	var recs map[bpf.ConnKey]bpf.ConnRecord
	if d.bpf != nil {
		if recs, err = d.bpf.Conns(); err != nil {
			d.log.Debug("connections: no connect times", "err", err)
		}
	}
	out := make([]api.Connection, 0, len(fcs))
	for _, fc := range fcs {
		c := fc.c
		if c.Role == "client" {
			r := recs[bpf.ConnKey(broker.DiagKey(fc.ref.(*netlink.Socket)))]
			c.Since = r.Since
			// The application named the service's address: the record
			// keeps it (the listing's remote is the backend's).
			c.Service = d.services.of(r.Peer)
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b api.Connection) int {
		return cmp.Or(cmp.Compare(a.Container, b.Container), a.VirtualLocal.Compare(b.VirtualLocal), a.HostLocal.Compare(b.HostLocal))
	})
	return out, nil
}
