package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeBackend struct {
	mu   sync.Mutex
	eps  map[Attachment]Endpoint
	adds int
}

func (f *fakeBackend) Status(context.Context) (Status, error) {
	return Status{Host: Host{Name: "h1", MTU: 1450}, StoreSynced: true}, nil
}
func (f *fakeBackend) Hosts(context.Context) ([]Host, error) { return []Host{{Name: "h1"}}, nil }
func (f *fakeBackend) Endpoints(_ context.Context, host string) ([]Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Endpoint
	for _, e := range f.eps {
		if host == "" || e.Host == host {
			out = append(out, e)
		}
	}
	return out, nil
}
func (f *fakeBackend) Endpoint(_ context.Context, a Attachment) (Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.eps[a]
	if !ok {
		return e, ErrNotFound
	}
	return e, nil
}
func (f *fakeBackend) AddEndpoint(_ context.Context, r EndpointRequest) (Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adds++
	if r.ContainerID == "full" {
		return Endpoint{}, ErrExhausted
	}
	e := Endpoint{ContainerID: r.ContainerID, IfName: r.IfName, Host: "h1", IPv4: netip.MustParseAddr("10.244.0.5"), Netns: r.Netns, Labels: r.Labels}
	f.eps[Attachment{r.ContainerID, r.IfName}] = e
	return e, nil
}
func (f *fakeBackend) DelEndpoint(_ context.Context, a Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.eps, a)
	return nil
}
func (f *fakeBackend) GC(_ context.Context, r GCRequest) (GCResponse, error) {
	return GCResponse{Released: []Attachment{}}, nil
}

func startServer(t *testing.T) (*Client, *fakeBackend, string) {
	t.Helper()
	fb := &fakeBackend{eps: map[Attachment]Endpoint{}}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(fb, slog.New(slog.DiscardHandler)).Run(ctx, sock) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	c := NewClient(sock)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.Status(context.Background()); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("server not up: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c, fb, sock
}

func TestRoundTrip(t *testing.T) {
	c, _, sock := startServer(t)
	ctx := t.Context()
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	req := EndpointRequest{ContainerID: "abc123", IfName: "eth0", Netns: "/run/netns/x", Labels: map[string]string{"app": "web"}}
	ep, err := c.AddEndpoint(ctx, req)
	if err != nil || ep.IPv4.String() != "10.244.0.5" || ep.Labels["app"] != "web" {
		t.Fatalf("AddEndpoint = %+v, %v", ep, err)
	}
	got, err := c.Endpoint(ctx, Attachment{"abc123", "eth0"})
	if err != nil || got.IPv4 != ep.IPv4 {
		t.Fatalf("Endpoint = %+v, %v", got, err)
	}
	if err := c.DelEndpoint(ctx, Attachment{"abc123", "eth0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Endpoint(ctx, Attachment{"abc123", "eth0"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after DEL: %v", err)
	}
	if _, err := c.AddEndpoint(ctx, EndpointRequest{ContainerID: "full", IfName: "eth0", Netns: "/x"}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("exhausted: %v", err)
	}
}

func TestBadRequests(t *testing.T) {
	c, fb, _ := startServer(t)
	ctx := t.Context()
	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   any
	}{
		{"empty container id", "POST", "/v1/endpoints", EndpointRequest{IfName: "eth0", Netns: "/x"}},
		{"container id with slash", "POST", "/v1/endpoints", EndpointRequest{ContainerID: "a/b", IfName: "eth0", Netns: "/x"}},
		{"long ifname", "POST", "/v1/endpoints", EndpointRequest{ContainerID: "a", IfName: "eth0123456789012", Netns: "/x"}},
		{"relative netns", "POST", "/v1/endpoints", EndpointRequest{ContainerID: "a", IfName: "eth0", Netns: "x"}},
		{"bad label", "POST", "/v1/endpoints", EndpointRequest{ContainerID: "a", IfName: "eth0", Netns: "/x", Labels: map[string]string{"bad key!": "v"}}},
		{"unknown field", "POST", "/v1/endpoints", map[string]any{"containerID": "a", "ifName": "eth0", "netns": "/x", "bogus": 1}},
		{"not json", "POST", "/v1/endpoints", "just a string"},
		{"gc with bad attachment", "POST", "/v1/gc", GCRequest{Valid: []Attachment{{ContainerID: "", IfName: "eth0"}}}},
		{"bad path id", "DELETE", "/v1/endpoints/..%2Fx/eth0", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Do(ctx, tc.method, tc.path, tc.body, nil)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if fb.adds != 0 {
		t.Fatalf("backend saw %d adds from bad requests", fb.adds)
	}
	err := c.Do(ctx, http.MethodGet, "/v1/nope", nil, nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Fatalf("unknown route: %v", err)
	}
}

func TestUnavailable(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "absent.sock"))
	_, err := c.Status(t.Context())
	if !IsUnavailable(err) || !strings.Contains(err.Error(), "absent.sock") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzValidateRequest(f *testing.F) {
	f.Add("abc", "eth0", "/run/netns/x", "app", "web")
	f.Fuzz(func(t *testing.T, id, ifname, netns, k, v string) {
		r := EndpointRequest{ContainerID: id, IfName: ifname, Netns: netns, Labels: map[string]string{k: v}}
		if r.Validate() != nil {
			return
		}
		// Whatever validates must be safe as etcd key segments.
		if strings.Contains(id, "/") || strings.Contains(ifname, "/") || id == ".." || ifname == ".." {
			t.Fatalf("accepted unsafe attachment %q %q", id, ifname)
		}
	})
}
