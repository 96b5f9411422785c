// Package embedetcd runs the single-node etcd that slimd embeds by default,
// so that one slimd alone is a working cluster. Production clusters point
// slimd at an external etcd instead and never start this.
package embedetcd

import (
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config says where the embedded member keeps data and listens.
type Config struct {
	Name      string
	DataDir   string
	ClientURL string // e.g. http://127.0.0.1:2379
	PeerURL   string // e.g. http://127.0.0.1:2380
	// InitialCluster lists every member of a new multi-member cluster as
	// etcd's --initial-cluster does (name=peerURL,...); empty makes a
	// single-member cluster. A member restarted on its data directory
	// ignores it.
	InitialCluster string
	// TLS, when its certificate is set, makes the member serve clients
	// and peers over TLS only (https URLs) and require client
	// certificates signed by TrustedCAFile; a client certificate's common
	// name is its etcd user once authentication is enabled.
	TLS transport.TLSInfo
}

// startTimeout bounds waiting for the member to serve; a single node with
// a local WAL is ready in about a second.
const startTimeout = 60 * time.Second

// Server is a running embedded etcd.
type Server struct {
	e   *embed.Etcd
	url string
}

// Start launches the member and waits until it serves clients.
func Start(cfg Config) (*Server, error) {
	cu, err := url.Parse(cfg.ClientURL)
	if err != nil || cu.Host == "" {
		return nil, fmt.Errorf("etcd client url %q: want http(s)://host:port", cfg.ClientURL)
	}
	pu, err := url.Parse(cfg.PeerURL)
	if err != nil || pu.Host == "" {
		return nil, fmt.Errorf("etcd peer url %q: want http(s)://host:port", cfg.PeerURL)
	}
	want := "http"
	if !cfg.TLS.Empty() {
		want = "https"
		if cfg.TLS.TrustedCAFile == "" {
			return nil, fmt.Errorf("embedded etcd tls: a CA file is needed to check client certificates")
		}
	}
	if cu.Scheme != want || pu.Scheme != want {
		return nil, fmt.Errorf("embedded etcd urls %s, %s: want %s:// (TLS configured: %t)", cu, pu, want, want == "https")
	}
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = filepath.Join(cfg.DataDir, "etcd")
	ec.ListenClientUrls = []url.URL{*cu}
	ec.AdvertiseClientUrls = []url.URL{*cu}
	ec.ListenPeerUrls = []url.URL{*pu}
	ec.AdvertisePeerUrls = []url.URL{*pu}
	ec.InitialCluster = fmt.Sprintf("%s=%s", cfg.Name, pu.String())
	if cfg.InitialCluster != "" {
		ec.InitialCluster = cfg.InitialCluster
		ec.InitialClusterToken = "slim"
	}
	if !cfg.TLS.Empty() {
		t := cfg.TLS
		t.ClientCertAuth = true
		ec.ClientTLSInfo = t
		ec.PeerTLSInfo = t
	}
	// etcd logs through zap with stack traces on every error, including
	// the expected ones at shutdown; keep errors, one line each.
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	zc.Encoding = "console"
	zc.DisableStacktrace = true
	zc.DisableCaller = true
	if lg, err := zc.Build(); err == nil {
		ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg.Named("etcd"))
	}
	// Keep history short: slimd's caches re-list on compaction.
	ec.AutoCompactionMode = "revision"
	ec.AutoCompactionRetention = "10000"
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(startTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after %s", startTimeout)
	}
	return &Server{e: e, url: cu.String()}, nil
}

// Endpoint is the client URL.
func (s *Server) Endpoint() string { return s.url }

// Err reports a fatal server error.
func (s *Server) Err() <-chan error { return s.e.Err() }

// closeWait bounds a graceful stop. etcd waits for other hosts' watch
// streams for up to its request timeout (about 7 s) before closing them;
// that long a stop can outlast a host lease. The WAL is fsynced on every
// commit, so stopping harder is as safe as a crash, which etcd is built
// to survive.
const closeWait = time.Second

// Close stops the member, gracefully if that takes less than closeWait.
func (s *Server) Close() {
	done := make(chan struct{})
	go func() {
		s.e.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeWait):
		// The process is about to exit; its sockets close with it.
	}
}
