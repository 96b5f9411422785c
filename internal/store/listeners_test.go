package store

import (
	"net/netip"
	"testing"

	"github.com/slimnet/slim/internal/api"
)

func TestListeners(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	g, err := s.Client().Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	l := api.Listener{VIP: netip.MustParseAddr("10.244.0.5"), Port: 80, Host: "h1",
		HostIP: netip.MustParseAddr("192.168.77.1"), HostPort: 20480, ContainerID: "c", IfName: "eth0"}
	if _, err := s.PutListener(ctx, l, g.ID); err != nil {
		t.Fatal(err)
	}
	key := s.ListenersPrefix() + ListenerKey(l.VIP, l.Port)
	// Another host does not withdraw h1's listener.
	if err := s.DeleteListener(ctx, "h2", l.VIP, l.Port); err != nil {
		t.Fatal(err)
	}
	if resp, _ := s.Client().Get(ctx, key); len(resp.Kvs) != 1 || resp.Kvs[0].Lease != int64(g.ID) {
		t.Fatalf("listener after foreign delete: %v", resp.Kvs)
	}
	if err := s.DeleteListener(ctx, "h1", l.VIP, l.Port); err != nil {
		t.Fatal(err)
	}
	if resp, _ := s.Client().Get(ctx, key); len(resp.Kvs) != 0 {
		t.Fatal("listener still published")
	}
	// On the lease: revoking it (host gone) withdraws the listener.
	if _, err := s.PutListener(ctx, l, g.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	if resp, _ := s.Client().Get(ctx, key); len(resp.Kvs) != 0 {
		t.Fatal("listener outlived its lease")
	}
	if _, err := s.SetFastPath(ctx, false); err != nil {
		t.Fatal(err)
	}
	if resp, _ := s.Client().Get(ctx, s.FastPathKey()); len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != `{"enabled":false}` {
		t.Fatalf("fast path switch %v", resp.Kvs)
	}
}
