// Package etcdtest starts a throwaway embedded etcd on loopback for tests.
package etcdtest

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/embedetcd"
	"github.com/slimnet/slim/internal/pki"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// New starts an etcd member in a temporary directory and returns a client;
// both are closed in t.Cleanup.
func New(t testing.TB) (*embedetcd.Server, *clientv3.Client) {
	t.Helper()
	srv := start(t, "http", transport.TLSInfo{})
	return srv, Client(t, srv.Endpoint(), transport.TLSInfo{})
}

// TLS is a member serving mutual TLS, and the CA that signed its
// certificate; Issue makes client identities.
type TLS struct {
	Server *embedetcd.Server
	CA     *pki.CA
	dir    string
}

// NewTLS starts a member that serves only TLS and requires client
// certificates signed by its CA. The returned client authenticates as
// "root".
func NewTLS(t testing.TB) (*TLS, *clientv3.Client) {
	t.Helper()
	ca, err := pki.NewCA("etcdtest")
	if err != nil {
		t.Fatal(err)
	}
	m := &TLS{CA: ca, dir: t.TempDir()}
	m.Server = start(t, "https", m.Issue(t, "server"))
	return m, Client(t, m.Server.Endpoint(), m.Issue(t, "root"))
}

// Issue writes a certificate for the client (or server) named cn.
func (m *TLS) Issue(t testing.TB, cn string) transport.TLSInfo {
	t.Helper()
	f, err := m.CA.Write(m.dir, cn, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return transport.TLSInfo{TrustedCAFile: f.CACert, CertFile: f.Cert, KeyFile: f.Key}
}

// Client connects to endpoint with info (plaintext when info is zero).
func Client(t testing.TB, endpoint string, info transport.TLSInfo) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if info.TrustedCAFile != "" || !info.Empty() {
		tc, err := info.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func start(t testing.TB, scheme string, info transport.TLSInfo) *embedetcd.Server {
	t.Helper()
	srv, err := embedetcd.Start(embedetcd.Config{
		Name:      "test",
		DataDir:   t.TempDir(),
		ClientURL: scheme + "://" + freeAddr(t),
		PeerURL:   scheme + "://" + freeAddr(t),
		TLS:       info,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprintf("127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port)
}
