package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/policy"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Network policies and namespace labels:
//
//	<p>/policies/<ns>/<name>   policyRecord: a NetworkPolicy (networking.k8s.io/v1)
//	<p>/namespaces/<ns>        namespaceRecord: the namespace's labels
//
// A policy's spec is stored in Kubernetes' own v1 form: that schema is
// versioned by Kubernetes and never changes shape within v1. Policies are
// validated on write and again on read (a record another writer made
// invalid is skipped, never enforced half-read).

// maxTxnOps is etcd's default limit of operations in one transaction
// (--max-txn-ops): an apply larger than that cannot be atomic.
const maxTxnOps = 128

// PoliciesPrefix is where policies live.
func (s *Store) PoliciesPrefix() string { return s.prefix + "/policies/" }

// PolicyKey is a policy's key below PoliciesPrefix (and in PolicyCache).
func PolicyKey(namespace, name string) string { return namespace + "/" + name }

// NamespacesPrefix is where namespace labels live.
func (s *Store) NamespacesPrefix() string { return s.prefix + "/namespaces/" }

type policyRecord struct {
	Namespace string                         `json:"namespace"`
	Name      string                         `json:"name"`
	Source    string                         `json:"source,omitempty"` // api.AnnotationSource
	Spec      networkingv1.NetworkPolicySpec `json:"spec"`
}

type namespaceRecord struct {
	Labels map[string]string `json:"labels,omitempty"`
}

func encodePolicy(p networkingv1.NetworkPolicy) ([]byte, error) {
	return json.Marshal(policyRecord{Namespace: p.Namespace, Name: p.Name, Source: p.Annotations[api.AnnotationSource], Spec: p.Spec})
}

func decodePolicy(b []byte) (networkingv1.NetworkPolicy, error) {
	var r policyRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return networkingv1.NetworkPolicy{}, err
	}
	p := networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.Name},
		Spec:       r.Spec,
	}
	if r.Source != "" {
		p.Annotations = map[string]string{api.AnnotationSource: r.Source}
	}
	if err := policy.Validate(&p); err != nil {
		return networkingv1.NetworkPolicy{}, err
	}
	return p, nil
}

// PutPolicies creates or replaces policies, all in one transaction, and
// returns its revision (for Cache.WaitRev). Every policy is validated
// first; one invalid policy changes nothing.
func (s *Store) PutPolicies(ctx context.Context, ps []networkingv1.NetworkPolicy) (int64, error) {
	if len(ps) == 0 {
		return 0, fmt.Errorf("%w: no policies", ErrInvalid)
	}
	if len(ps) > maxTxnOps {
		return 0, fmt.Errorf("%w: %d policies in one apply: at most %d (etcd's transaction limit)", ErrInvalid, len(ps), maxTxnOps)
	}
	var ops []clientv3.Op
	seen := map[string]bool{}
	for i := range ps {
		p := &ps[i]
		if p.Namespace == "" {
			p.Namespace = policy.DefaultNamespace
		}
		if err := policy.Validate(p); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		k := PolicyKey(p.Namespace, p.Name)
		if seen[k] {
			return 0, fmt.Errorf("%w: policy %s given twice", ErrInvalid, k)
		}
		seen[k] = true
		b, err := encodePolicy(*p)
		if err != nil {
			return 0, err
		}
		ops = append(ops, clientv3.OpPut(s.PoliciesPrefix()+k, string(b)))
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("put policies: %w", err)
	}
	return resp.Header.Revision, nil
}

// DeletePolicy removes a policy; ErrNotFound if there is none.
func (s *Store) DeletePolicy(ctx context.Context, namespace, name string) (int64, error) {
	k := PolicyKey(namespace, name)
	resp, err := s.cli.Delete(ctx, s.PoliciesPrefix()+k)
	if err != nil {
		return 0, fmt.Errorf("delete policy %s: %w", k, err)
	}
	if resp.Deleted == 0 {
		return 0, fmt.Errorf("policy %s: %w", k, ErrNotFound)
	}
	return resp.Header.Revision, nil
}

// PolicyCache is a cache of the policies, keyed by PolicyKey.
func (s *Store) PolicyCache(log *slog.Logger, onChange func()) *Cache[networkingv1.NetworkPolicy] {
	return newCache(s.cli, s.PoliciesPrefix(), decodePolicy, log, onChange)
}

// NamespaceCache is a cache of the namespaces' labels, keyed by name.
// Names come from the keys: a record holds only labels.
func (s *Store) NamespaceCache(log *slog.Logger, onChange func()) *Cache[map[string]string] {
	return newCache(s.cli, s.NamespacesPrefix(), decodeNamespace, log, onChange)
}

func decodeNamespace(b []byte) (map[string]string, error) {
	var r namespaceRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	if err := api.ValidateLabels(r.Labels); err != nil {
		return nil, err
	}
	return r.Labels, nil
}

// LabelNamespace changes a namespace's labels (read, change, write back
// if nobody wrote in between; retried a few times) and returns the
// namespace and the write's revision. kubernetes.io/metadata.name is
// implied, never stored.
func (s *Store) LabelNamespace(ctx context.Context, name string, change api.NamespaceLabels) (api.Namespace, int64, error) {
	if err := api.ValidateNamespace(name); err != nil {
		return api.Namespace{}, 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if slices.Contains(change.Remove, api.LabelNamespaceName) {
		return api.Namespace{}, 0, fmt.Errorf("%w: label %s cannot be removed", ErrInvalid, api.LabelNamespaceName)
	}
	k := s.NamespacesPrefix() + name
	for range 5 {
		resp, err := s.cli.Get(ctx, k)
		if err != nil {
			return api.Namespace{}, 0, fmt.Errorf("label namespace %s: %w", name, err)
		}
		var have map[string]string
		var modRev int64
		if len(resp.Kvs) == 1 {
			modRev = resp.Kvs[0].ModRevision
			if l, err := decodeNamespace(resp.Kvs[0].Value); err == nil {
				have = l
			}
		}
		labels := change.Apply(have)
		ns := api.Namespace{Name: name, Labels: labels}
		if err := ns.Validate(); err != nil {
			return api.Namespace{}, 0, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		delete(labels, api.LabelNamespaceName)
		b, err := json.Marshal(namespaceRecord{Labels: labels})
		if err != nil {
			return api.Namespace{}, 0, err
		}
		txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", modRev)).
			Then(clientv3.OpPut(k, string(b))).Commit()
		if err != nil {
			return api.Namespace{}, 0, fmt.Errorf("label namespace %s: %w", name, err)
		}
		if txn.Succeeded {
			return NamespaceOf(name, labels), txn.Header.Revision, nil
		}
	}
	return api.Namespace{}, 0, fmt.Errorf("label namespace %s: changed by others while writing, try again", name)
}

// NamespaceOf is a namespace with its implied name label.
func NamespaceOf(name string, labels map[string]string) api.Namespace {
	l := maps.Clone(labels)
	if l == nil {
		l = map[string]string{}
	}
	l[api.LabelNamespaceName] = name
	return api.Namespace{Name: name, Labels: l}
}
