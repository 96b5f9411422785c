package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"time"

	"github.com/slimnet/slim/internal/store"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
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
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"https://" + netip.AddrPortFrom(h1, etcdClientPort).String()},
		TLS:         tc,
		DialTimeout: 10 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dialIn(NetnsPath(HostNetns(HostName(1)))))},
		Logger:      zap.NewNop(),
	})
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

// dialIn dials TCP from the network namespace at path. A socket stays in
// the namespace it was made in, whichever thread uses it later, so only
// the dial runs on a thread switched into the namespace.
func dialIn(path string) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		done := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			orig, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				runtime.UnlockOSThread()
				done <- result{nil, err}
				return
			}
			defer orig.Close()
			if err := enterNetns(path); err != nil {
				runtime.UnlockOSThread()
				done <- result{nil, err}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
				// The thread stays locked and dies with the goroutine.
				if c != nil {
					c.Close()
				}
				done <- result{nil, errors.Join(err, rerr)}
				return
			}
			runtime.UnlockOSThread()
			done <- result{c, err}
		}()
		r := <-done
		return r.c, r.err
	}
}
