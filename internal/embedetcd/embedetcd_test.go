package embedetcd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/embedetcd"
	"github.com/slimnet/slim/internal/embedetcd/etcdtest"
	"github.com/slimnet/slim/internal/pki"
	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// With certificates the member serves mutual TLS only: plaintext, no
// client certificate and a certificate of another CA are all refused.
func TestTLS(t *testing.T) {
	m, root := etcdtest.NewTLS(t)
	ctx := t.Context()
	if _, err := root.Put(ctx, "/k", "v"); err != nil {
		t.Fatalf("mutual TLS: %v", err)
	}
	ep := m.Server.Endpoint()
	if !strings.HasPrefix(ep, "https://") {
		t.Fatalf("endpoint %s", ep)
	}
	good := m.Issue(t, "h1")
	other, err := pki.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	odir := t.TempDir()
	of, err := other.Write(odir, "h1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		endpoint string
		info     transport.TLSInfo
	}{
		{"plaintext", "http://" + strings.TrimPrefix(ep, "https://"), transport.TLSInfo{}},
		{"no client certificate", ep, transport.TLSInfo{TrustedCAFile: good.TrustedCAFile}},
		{"certificate of another CA", ep, transport.TLSInfo{TrustedCAFile: good.TrustedCAFile, CertFile: of.Cert, KeyFile: of.Key}},
		{"server not trusted", ep, transport.TLSInfo{TrustedCAFile: of.CACert, CertFile: good.CertFile, KeyFile: good.KeyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli := etcdtest.Client(t, tc.endpoint, tc.info)
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			if _, err := cli.Get(ctx, "/k"); err == nil {
				t.Fatal("read the store")
			}
		})
	}
}

func TestStartRefusesMismatchedURLs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		scheme string
		tls    transport.TLSInfo
		want   string
	}{
		{"https without certificates", "https", transport.TLSInfo{}, "want http://"},
		{"certificates with http", "http", transport.TLSInfo{TrustedCAFile: "ca", CertFile: "c", KeyFile: "k"}, "want https://"},
		{"no CA", "https", transport.TLSInfo{CertFile: "c", KeyFile: "k"}, "CA file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := embedetcd.Start(embedetcd.Config{Name: "x", DataDir: t.TempDir(),
				ClientURL: tc.scheme + "://127.0.0.1:1", PeerURL: tc.scheme + "://127.0.0.1:2", TLS: tc.tls})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
