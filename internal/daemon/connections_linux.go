package daemon

import (
	"cmp"
	"fmt"
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
func (d *Daemon) connections() ([]api.Connection, error) {
	eps, _ := d.endpoints.Snapshot()
	hosts, _ := d.hosts.Snapshot()
	ls, _ := d.listeners.Snapshot()
	t := newConnTable(d.self.UnderlayIP, d.cfg.PortBlockSize, hosts, eps, ls)
	var since map[bpf.ConnKey]time.Time
	if d.bpf != nil {
		var err error
		if since, err = d.bpf.ConnsSince(); err != nil {
			d.log.Debug("connections: no connect times", "err", err)
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
			c, ok := t.classify(k.Local, k.Remote, tcpStates[sk.State])
			if !ok {
				continue
			}
			if c.Role == "client" {
				c.Since = since[bpf.ConnKey(k)]
			}
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b api.Connection) int {
		return cmp.Or(cmp.Compare(a.Container, b.Container), a.VirtualLocal.Compare(b.VirtualLocal), a.HostLocal.Compare(b.HostLocal))
	})
	return out, nil
}
