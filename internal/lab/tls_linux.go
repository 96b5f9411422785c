package lab

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/slimnet/slim/internal/store"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// grantHosts turns on etcd's authentication in h1's etcd, with one user
// per host that may touch only the store's prefix (store.GrantPrefix).
// h1's etcd listens only inside h1's namespace, so the lab's client makes
// its connections there.
func grantHosts(ctx context.Context, dir string, p plan) error {
	h1, err := hostIP(p.Underlay, 1)
	if err != nil {
		return err
	}
	f := certFiles(dir, rootUser)
	tc, err := transport.TLSInfo{TrustedCAFile: f.CACert, CertFile: f.Cert, KeyFile: f.Key}.ClientConfig()
	if err != nil {
		return err
	}
	ccfg := etcdConfigIn(HostName(1), []string{"https://" + netip.AddrPortFrom(h1, etcdClientPort).String()}, 10*time.Second)
	ccfg.TLS = tc
	cli, err := clientv3.New(ccfg)
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer cli.Close()
	hosts := make([]string, p.Hosts)
	for i := range hosts {
		hosts[i] = HostName(i + 1)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return store.GrantPrefix(ctx, cli, "", hosts)
}
