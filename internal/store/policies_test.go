package store

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/poll"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func testPolicy(ns, name string) networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
}

func TestPolicies(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	cache := s.PolicyCache(slog.New(slog.DiscardHandler), nil)
	go cache.Run(ctx)

	// No namespace means default.
	rev, err := s.PutPolicies(ctx, []networkingv1.NetworkPolicy{testPolicy("x", "deny"), testPolicy("", "deny")})
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.WaitRev(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if got, ok := cache.Get(PolicyKey("default", "deny")); !ok || got.Namespace != "default" || len(got.Spec.PolicyTypes) != 1 {
		t.Fatalf("default/deny: %+v %v", got, ok)
	}
	// The record is Kubernetes' v1 spec, with its own field names.
	resp, _ := s.Client().Get(ctx, s.PoliciesPrefix()+"x/deny")
	if want := `{"namespace":"x","name":"deny","spec":{"podSelector":{},"policyTypes":["Ingress"]}}`; len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
		t.Errorf("stored %s, want %s", resp.Kvs, want)
	}

	// The source survives the round trip; no other annotation is kept.
	mirrored := testPolicy("x", "mirrored")
	mirrored.Annotations = map[string]string{api.AnnotationSource: api.SourceKubernetes, "other": "x"}
	if rev, err = s.PutPolicies(ctx, []networkingv1.NetworkPolicy{mirrored}); err != nil {
		t.Fatal(err)
	}
	if err := cache.WaitRev(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if got, _ := cache.Get(PolicyKey("x", "mirrored")); !maps.Equal(got.Annotations, map[string]string{api.AnnotationSource: api.SourceKubernetes}) {
		t.Errorf("mirrored policy's annotations %v", got.Annotations)
	}
	if _, err = s.DeletePolicy(ctx, "x", "mirrored"); err != nil {
		t.Fatal(err)
	}

	// One invalid policy changes nothing; so does a duplicate or an
	// apply larger than one transaction.
	bad := testPolicy("x", "bad")
	bad.Spec.PolicyTypes = []networkingv1.PolicyType{"Sideways"}
	many := make([]networkingv1.NetworkPolicy, maxTxnOps+1)
	for i := range many {
		many[i] = testPolicy("x", fmt.Sprintf("p%d", i))
	}
	for name, ps := range map[string][]networkingv1.NetworkPolicy{
		"invalid":   {testPolicy("x", "ok"), bad},
		"duplicate": {testPolicy("x", "ok"), testPolicy("x", "ok")},
		"too many":  many,
		"none":      nil,
	} {
		if _, err := s.PutPolicies(ctx, ps); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if resp, _ := s.Client().Get(ctx, s.PoliciesPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly()); resp.Count != 2 {
		t.Errorf("%d policies stored, want 2", resp.Count)
	}

	// A record written around the API that does not validate is
	// skipped by the cache, not enforced half-read.
	if _, err := s.Client().Put(ctx, s.PoliciesPrefix()+"x/forged", `{"namespace":"x","name":"forged","spec":{"policyTypes":["Sideways"]}}`); err != nil {
		t.Fatal(err)
	}
	rev, err = s.DeletePolicy(ctx, "x", "deny")
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.WaitRev(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if _, ok := cache.Get("x/forged"); ok || cache.Len() != 1 {
		t.Errorf("cache holds %d policies (forged one: %v), want only default/deny", cache.Len(), ok)
	}
	if _, err := s.DeletePolicy(ctx, "x", "deny"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete again: %v, want ErrNotFound", err)
	}
}

func TestLabelNamespace(t *testing.T) {
	s := testStore(t)
	ctx := t.Context()
	cache := s.NamespaceCache(slog.New(slog.DiscardHandler), nil)
	go cache.Run(ctx)
	ns, _, err := s.LabelNamespace(ctx, "y", api.NamespaceLabels{Set: map[string]string{"team": "blue", "env": "prod"}})
	if err != nil || ns.Labels["team"] != "blue" || ns.Labels[api.LabelNamespaceName] != "y" {
		t.Fatalf("label: %+v %v", ns, err)
	}
	ns, rev, err := s.LabelNamespace(ctx, "y", api.NamespaceLabels{Remove: []string{"env"}, Set: map[string]string{"team": "red"}})
	if err != nil || len(ns.Labels) != 2 || ns.Labels["team"] != "red" {
		t.Fatalf("relabel: %+v %v", ns, err)
	}
	if err := cache.WaitRev(ctx, rev); err != nil {
		t.Fatal(err)
	}
	// The name label is implied, never stored.
	if got, ok := cache.Get("y"); !ok || len(got) != 1 || got["team"] != "red" {
		t.Errorf("cached %v %v", got, ok)
	}
	for name, tc := range map[string]struct {
		ns     string
		change api.NamespaceLabels
	}{
		"bad name":          {"Y_", api.NamespaceLabels{Set: map[string]string{"a": "b"}}},
		"remove name label": {"y", api.NamespaceLabels{Remove: []string{api.LabelNamespaceName}}},
		"other name label":  {"y", api.NamespaceLabels{Set: map[string]string{api.LabelNamespaceName: "z"}}},
		"bad label":         {"y", api.NamespaceLabels{Set: map[string]string{"a b": "c"}}},
	} {
		if _, _, err := s.LabelNamespace(ctx, tc.ns, tc.change); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	poll.Until(t, time.Second, func() error {
		if got, _ := cache.Get("y"); got["team"] != "red" || strings.Contains(fmt.Sprint(got), "a b") {
			return fmt.Errorf("a refused change reached the store: %v", got)
		}
		return nil
	})
}
