package cni

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/poll"
)

// fakeSlimd is an in-memory api.Backend: one host, addresses handed out in
// order, no store.
type fakeSlimd struct {
	mu        sync.Mutex
	status    api.Status
	ipv6      bool
	next      int
	endpoints map[api.Attachment]api.Endpoint
}

func newFakeSlimd(ipv6 bool) *fakeSlimd {
	f := &fakeSlimd{
		ipv6:      ipv6,
		endpoints: map[api.Attachment]api.Endpoint{},
		status: api.Status{
			Host: api.Host{
				Name:    "h1",
				Subnet4: netip.MustParsePrefix("10.244.1.0/24"),
				MTU:     1400,
			},
			StoreSynced: true,
			Gateway4:    netip.MustParseAddr("169.254.1.1"),
		},
	}
	if ipv6 {
		f.status.Host.Subnet6 = netip.MustParsePrefix("fd00:244:1::/64")
		f.status.Gateway6 = netip.MustParseAddr("fe80::1")
	}
	return f
}

func (f *fakeSlimd) setSynced(synced bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status.StoreSynced = synced
}

func (f *fakeSlimd) Status(context.Context) (api.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status, nil
}

func (f *fakeSlimd) Hosts(context.Context) ([]api.Host, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []api.Host{f.status.Host}, nil
}

func (f *fakeSlimd) Endpoints(_ context.Context, host string) ([]api.Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.Endpoint
	for _, e := range f.endpoints {
		if host == "" || host == e.Host {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b api.Endpoint) int { return a.IPv4.Compare(b.IPv4) })
	return out, nil
}

func (f *fakeSlimd) Endpoint(_ context.Context, a api.Attachment) (api.Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.endpoints[a]
	if !ok {
		return api.Endpoint{}, fmt.Errorf("endpoint %s/%s: %w", a.ContainerID, a.IfName, api.ErrNotFound)
	}
	return e, nil
}

func (f *fakeSlimd) AddEndpoint(_ context.Context, r api.EndpointRequest) (api.Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := api.Attachment{ContainerID: r.ContainerID, IfName: r.IfName}
	if e, ok := f.endpoints[a]; ok {
		return e, nil
	}
	f.next++
	if f.next > 250 {
		return api.Endpoint{}, api.ErrExhausted
	}
	e := api.Endpoint{
		ContainerID: r.ContainerID,
		IfName:      r.IfName,
		Host:        f.status.Host.Name,
		IPv4:        netip.AddrFrom4([4]byte{10, 244, 1, byte(f.next + 1)}),
		Labels:      r.Labels,
		Netns:       r.Netns,
		Created:     time.Now(),
	}
	if f.ipv6 {
		b := f.status.Host.Subnet6.Addr().As16()
		b[15] = byte(f.next + 1)
		e.IPv6 = netip.AddrFrom16(b)
	}
	f.endpoints[a] = e
	return e, nil
}

func (f *fakeSlimd) DelEndpoint(_ context.Context, a api.Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.endpoints, a)
	return nil
}

func (f *fakeSlimd) GC(_ context.Context, r api.GCRequest) (api.GCResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var resp api.GCResponse
	for a := range f.endpoints {
		if !slices.Contains(r.Valid, a) {
			delete(f.endpoints, a)
			resp.Released = append(resp.Released, a)
		}
	}
	return resp, nil
}

// attachments lists the endpoints the fake holds.
func (f *fakeSlimd) attachments() []api.Attachment {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.Attachment
	for a := range f.endpoints {
		out = append(out, a)
	}
	return out
}

// serveSlimd serves b on a fresh unix socket until the test ends and
// returns the socket's path.
func serveSlimd(t *testing.T, b api.Backend) string {
	t.Helper()
	// Not t.TempDir: a unix socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "slimcni-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "slimd.sock")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go func() { done <- api.NewServer(b, log).Run(ctx, sock) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("fake slimd: %v", err)
		}
	})
	poll.Until(t, 5*time.Second, func() error {
		_, err := api.NewClient(sock).Status(ctx)
		return err
	})
	return sock
}

// testWriter sends log output to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(b))
	return len(b), nil
}
