package daemon

import (
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/slimnet/slim/internal/nat"
)

// The store's default client and peer ports (etcd's), guarded whatever
// this host's configuration says: another host may run its store on them.
const (
	etcdClientPort = 2379
	etcdPeerPort   = 2380
)

// controlPlanePorts are the TCP ports containers must not reach on any
// host: the store's (the defaults, this host's embedded member's, and the
// external endpoints') and slimd's metrics. The local API is a unix
// socket.
func (c Config) controlPlanePorts() []uint16 {
	ports := []uint16{etcdClientPort, etcdPeerPort}
	for _, u := range append([]string{c.EtcdListenClient, c.EtcdListenPeer}, c.EtcdEndpoints...) {
		if p, ok := urlPort(u); ok {
			ports = append(ports, p)
		}
	}
	if _, p, err := net.SplitHostPort(c.MetricsAddr); err == nil {
		if n, err := strconv.ParseUint(p, 10, 16); err == nil && n != 0 {
			ports = append(ports, uint16(n))
		}
	}
	return ports
}

// storeHosts are the literal addresses of the external store endpoints.
func (c Config) storeHosts() []netip.Addr {
	var out []netip.Addr
	for _, e := range c.EtcdEndpoints {
		if u, err := url.Parse(e); err == nil {
			if a, err := netip.ParseAddr(u.Hostname()); err == nil {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

func urlPort(s string) (uint16, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Port() == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(u.Port(), 10, 16)
	return uint16(n), err == nil && n != 0
}

// guardBase is the control-plane guard without the cluster's hosts: the
// ports above, on the store's members, for traffic from containers.
func (c Config) guardBase() nat.Guard {
	g := nat.Guard{IfPrefixes: []string{vethPrefix}, Ports: c.controlPlanePorts(), Hosts: c.storeHosts()}
	if !strings.HasPrefix(c.VXLANDevice, vethPrefix) {
		g.IfPrefixes = append(g.IfPrefixes, c.VXLANDevice)
	}
	return g
}

// vethPrefix: container traffic arrives on the host ends of container
// veths (slim-cni names them "slim" + a hash) and on the vxlan device
// (remote containers; "slim-vxlan" by default).
const vethPrefix = "slim"
