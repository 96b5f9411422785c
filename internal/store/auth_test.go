package store

import (
	"errors"
	"testing"

	"github.com/slimnet/slim/internal/embedetcd/etcdtest"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Everything the store does works for a user that may touch only the
// prefix: the store's tests run again under that role.
func TestPrefixRole(t *testing.T) {
	underRole = true
	t.Cleanup(func() { underRole = false })
	for name, fn := range map[string]func(*testing.T){
		"EnsureConfig":   TestEnsureConfig,
		"Endpoints":      TestEndpoints,
		"Cache":          TestCache,
		"Lease":          TestLeaseReuseAndRecovery,
		"LabelEndpoint":  TestLabelEndpoint,
		"Listeners":      TestListeners,
		"Policies":       TestPolicies,
		"Namespaces":     TestLabelNamespace,
		"PortBlocks":     TestPortBlocks,
		"EndpointBlocks": TestEndpointWithBlocks,
		"Services":       TestServices,
		// Not TestCacheResyncAfterCompaction: compacting is an operator's
		// (root's) job, never slimd's.
	} {
		t.Run(name, fn)
	}
}

// Outside the prefix, and without the role, etcd refuses.
func TestPrefixRoleRefuses(t *testing.T) {
	m, root := etcdtest.NewTLS(t)
	if err := GrantPrefix(t.Context(), root, "/slim", []string{"h1"}); err != nil {
		t.Fatal(err)
	}
	// Idempotent: a second run (say, to add a host) succeeds.
	if err := GrantPrefix(t.Context(), root, "/slim", []string{"h1", "h2"}); err != nil {
		t.Fatalf("again: %v", err)
	}
	h1 := etcdtest.Client(t, m.Server.Endpoint(), m.Issue(t, "h1"))
	ctx := t.Context()
	if _, err := h1.Put(ctx, "/slim/x", "1"); err != nil {
		t.Fatalf("inside the prefix: %v", err)
	}
	for _, key := range []string{"/other", "/slimx", "/sli"} {
		if _, err := h1.Put(ctx, key, "1"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Errorf("put %s: %v, want permission denied", key, err)
		}
		if _, err := h1.Get(ctx, key); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Errorf("get %s: %v, want permission denied", key, err)
		}
	}
	if _, err := h1.UserAdd(ctx, "mallory", "pw"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("user add: %v, want permission denied", err)
	}
	stranger := etcdtest.Client(t, m.Server.Endpoint(), m.Issue(t, "h9"))
	if _, err := stranger.Get(ctx, "/slim/x"); err == nil {
		t.Error("a certificate of the right CA but an unknown user read the store")
	}
}
