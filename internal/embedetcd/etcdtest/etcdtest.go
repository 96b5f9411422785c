// Package etcdtest starts a throwaway embedded etcd on loopback for tests.
package etcdtest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/embedetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// New starts an etcd member in a temporary directory and returns a client;
// both are closed in t.Cleanup.
func New(t testing.TB) (*embedetcd.Server, *clientv3.Client) {
	t.Helper()
	srv, err := embedetcd.Start(embedetcd.Config{
		Name:      "test",
		DataDir:   t.TempDir(),
		ClientURL: "http://" + freeAddr(t),
		PeerURL:   "http://" + freeAddr(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return srv, cli
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprintf("127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port)
}
