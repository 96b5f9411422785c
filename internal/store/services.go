package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/service"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Services and their virtual IPs:
//
//	<p>/services/<ns>/<name>   serviceRecord: a Service (v1), its cluster IP set
//	<p>/serviceips/<ip>        "<ns>/<name>": the cluster IP's holder
//
// A service's spec is stored in Kubernetes' own v1 form, validated on
// write and again on read. A cluster IP is claimed with the service, in
// one transaction, so no two services ever hold one.

// ServicesPrefix is where services live.
func (s *Store) ServicesPrefix() string { return s.prefix + "/services/" }

func (s *Store) serviceIPsPrefix() string { return s.prefix + "/serviceips/" }

// ServiceKey is a service's key below ServicesPrefix (and in ServiceCache).
func ServiceKey(namespace, name string) string { return namespace + "/" + name }

type serviceRecord struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// BackendRemoval is the service's service.AnnotationBackendRemoval
	// (the only annotation Slim reads).
	BackendRemoval string             `json:"backendRemoval,omitempty"`
	Source         string             `json:"source,omitempty"` // api.AnnotationSource
	Spec           corev1.ServiceSpec `json:"spec"`
}

func decodeService(b []byte) (corev1.Service, error) {
	var r serviceRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return corev1.Service{}, err
	}
	svc := corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.Name},
		Spec:       r.Spec,
	}
	for k, v := range map[string]string{service.AnnotationBackendRemoval: r.BackendRemoval, api.AnnotationSource: r.Source} {
		if v != "" {
			if svc.Annotations == nil {
				svc.Annotations = map[string]string{}
			}
			svc.Annotations[k] = v
		}
	}
	if err := service.Validate(&svc); err != nil {
		return corev1.Service{}, err
	}
	if svc.Spec.ClusterIP == "" {
		return corev1.Service{}, fmt.Errorf("service %s: no cluster IP", service.Key(&svc))
	}
	return svc, nil
}

// PutService creates or replaces one service (see PutServices).
func (s *Store) PutService(ctx context.Context, svc corev1.Service, cidr netip.Prefix) (corev1.Service, int64, error) {
	out, rev, err := s.PutServices(ctx, []corev1.Service{svc}, cidr)
	if err != nil {
		return svc, 0, err
	}
	return out[0], rev, nil
}

// PutServices creates or replaces services, all in one transaction: one
// that cannot be written (invalid, or its cluster IP refused) changes
// nothing. A service's cluster IP is the one it asks for (inside cidr
// and not another service's), the one it has already (a cluster IP does
// not change), or the lowest free address of cidr. It returns the
// services as stored and the revision of the write (for Cache.WaitRev).
func (s *Store) PutServices(ctx context.Context, svcs []corev1.Service, cidr netip.Prefix) ([]corev1.Service, int64, error) {
	if len(svcs) == 0 {
		return nil, 0, fmt.Errorf("%w: no services", ErrInvalid)
	}
	if 2*len(svcs) > maxTxnOps {
		return nil, 0, fmt.Errorf("%w: %d services in one apply: at most %d (etcd's transaction limit)", ErrInvalid, len(svcs), maxTxnOps/2)
	}
	seen := map[string]bool{}
	for i := range svcs {
		if err := service.Validate(&svcs[i]); err != nil {
			return nil, 0, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		k := service.Key(&svcs[i])
		if seen[k] {
			return nil, 0, fmt.Errorf("%w: service %s given twice", ErrInvalid, k)
		}
		seen[k] = true
	}
	for range maxClaimAttempts {
		out, cmps, ops, err := s.planServices(ctx, svcs, cidr)
		if err != nil {
			return nil, 0, err
		}
		tr, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return nil, 0, fmt.Errorf("write services: %w", err)
		}
		if tr.Succeeded {
			return out, tr.Header.Revision, nil
		}
	}
	return nil, 0, fmt.Errorf("write services: still contended after %d attempts", maxClaimAttempts)
}

// planServices reads what PutServices needs and returns the services as
// they will be stored, and the transaction: guarded by the revisions it
// read of each service and each cluster IP's claim.
func (s *Store) planServices(ctx context.Context, svcs []corev1.Service, cidr netip.Prefix) ([]corev1.Service, []clientv3.Cmp, []clientv3.Op, error) {
	var out []corev1.Service
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	taken := map[netip.Addr]string{} // in this apply
	var free []netip.Addr
	for _, svc := range svcs {
		key := ServiceKey(svc.Namespace, svc.Name)
		sk := s.ServicesPrefix() + key
		cur, err := s.cli.Get(ctx, sk)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("read service %s: %w", key, err)
		}
		var have netip.Addr
		var curRev int64
		if len(cur.Kvs) == 1 {
			curRev = cur.Kvs[0].ModRevision
			if old, err := decodeService(cur.Kvs[0].Value); err == nil {
				have, _ = netip.ParseAddr(old.Spec.ClusterIP)
			}
		}
		want := have
		if svc.Spec.ClusterIP != "" {
			want = netip.MustParseAddr(svc.Spec.ClusterIP) // Validate parsed it
			if have.IsValid() && want != have {
				return nil, nil, nil, fmt.Errorf("%w: service %s: spec.clusterIP %s: it is %s, and a cluster IP cannot change", ErrInvalid, key, want, have)
			}
			if !cidr.Contains(want) || want == cidr.Masked().Addr() {
				return nil, nil, nil, fmt.Errorf("%w: service %s: spec.clusterIP %s is outside the service CIDR %s", ErrInvalid, key, want, cidr)
			}
		}
		if !want.IsValid() {
			if free == nil {
				if free, err = s.freeServiceIPs(ctx, cidr, len(svcs)); err != nil {
					return nil, nil, nil, err
				}
			}
			for len(free) > 0 && !want.IsValid() {
				if _, used := taken[free[0]]; !used {
					want = free[0]
				}
				free = free[1:]
			}
			if !want.IsValid() {
				return nil, nil, nil, fmt.Errorf("no free cluster IP in %s: %w", cidr, ErrExhausted)
			}
		}
		if other, dup := taken[want]; dup {
			return nil, nil, nil, fmt.Errorf("%w: services %s and %s both ask for cluster IP %s", ErrInvalid, other, key, want)
		}
		taken[want] = key
		ik := s.serviceIPsPrefix() + want.String()
		holder, err := s.cli.Get(ctx, ik)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("read cluster IP %s: %w", want, err)
		}
		ipRev := int64(0) // the claim must be absent, or ours
		if len(holder.Kvs) == 1 {
			if h := string(holder.Kvs[0].Value); h != key {
				return nil, nil, nil, fmt.Errorf("%w: service %s: spec.clusterIP %s is allocated to service %s", ErrInvalid, key, want, h)
			}
			ipRev = holder.Kvs[0].ModRevision
		}
		stored := svc
		stored.Spec.ClusterIP, stored.Spec.ClusterIPs = want.String(), []string{want.String()}
		b, err := json.Marshal(serviceRecord{Namespace: stored.Namespace, Name: stored.Name,
			BackendRemoval: stored.Annotations[service.AnnotationBackendRemoval], Source: stored.Annotations[api.AnnotationSource], Spec: stored.Spec})
		if err != nil {
			return nil, nil, nil, err
		}
		out = append(out, stored)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(sk), "=", curRev), clientv3.Compare(clientv3.ModRevision(ik), "=", ipRev))
		ops = append(ops, clientv3.OpPut(sk, string(b)), clientv3.OpPut(ik, key))
	}
	return out, cmps, ops, nil
}

// freeServiceIPs are the n lowest addresses of cidr no service holds
// (not the network or broadcast address), fewer if there are not as many.
func (s *Store) freeServiceIPs(ctx context.Context, cidr netip.Prefix, n int) ([]netip.Addr, error) {
	resp, err := s.cli.Get(ctx, s.serviceIPsPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list cluster IPs: %w", err)
	}
	used := map[netip.Addr]bool{}
	for _, kv := range resp.Kvs {
		if a, err := netip.ParseAddr(strings.TrimPrefix(string(kv.Key), s.serviceIPsPrefix())); err == nil {
			used[a] = true
		}
	}
	out := []netip.Addr{}
	for a := cidr.Masked().Addr().Next(); cidr.Contains(a) && len(out) < n; a = a.Next() {
		if !used[a] && (!a.Next().IsValid() || cidr.Contains(a.Next())) { // not the broadcast address
			out = append(out, a)
		}
	}
	return out, nil
}

// DeleteService removes a service and frees its cluster IP, and returns
// the revision of the delete.
func (s *Store) DeleteService(ctx context.Context, namespace, name string) (int64, error) {
	key := ServiceKey(namespace, name)
	sk := s.ServicesPrefix() + key
	resp, err := s.cli.Get(ctx, sk)
	if err != nil {
		return 0, fmt.Errorf("read service %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("service %s: %w", key, ErrNotFound)
	}
	ops := []clientv3.Op{clientv3.OpDelete(sk)}
	var r serviceRecord
	if json.Unmarshal(resp.Kvs[0].Value, &r) == nil && r.Spec.ClusterIP != "" {
		ik := s.serviceIPsPrefix() + r.Spec.ClusterIP
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(ik), "=", key)}, []clientv3.Op{clientv3.OpDelete(ik)}, nil))
	}
	tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(sk), "=", resp.Kvs[0].ModRevision)).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("delete service %s: %w", key, err)
	}
	if !tr.Succeeded {
		return 0, fmt.Errorf("delete service %s: changed concurrently, retry", key)
	}
	return tr.Header.Revision, nil
}

// ServiceCache is a cache of the services, keyed by ServiceKey.
func (s *Store) ServiceCache(log *slog.Logger, onChange func()) *Cache[corev1.Service] {
	return newCache(s.cli, s.ServicesPrefix(), decodeService, log, onChange)
}
