package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/ipam"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// HostNet is what endpoint allocation needs to know about the local host.
type HostNet struct {
	Host    string
	Subnet4 netip.Prefix
	Subnet6 netip.Prefix // zero if IPv6 is off
}

// maxAllocAttempts bounds the allocation loop; only one slimd allocates in
// a host's subnet, so conflicts come from stale reads, not contention.
const maxAllocAttempts = 16

// AddEndpoint allocates addresses for r on host hn, or returns the endpoint
// that already exists for the same attachment (CNI ADD is retried by
// runtimes). With a non-zero blocks.Size the endpoint also gets its first
// source port block per address family, so that every host can map (host
// IP, port) back to it before its first connection. The endpoint, its
// address guard key and its block claims are written in one transaction
// that fails if any of them exists, so an address or a block is never
// given twice and a failed ADD leaves nothing behind. A family without a
// free block is left without one: the container still works on the
// overlay. last is the previously allocated address (for round robin).
func (s *Store) AddEndpoint(ctx context.Context, hn HostNet, r api.EndpointRequest, blocks BlockRange, last netip.Addr, now time.Time) (api.Endpoint, error) {
	if blocks.Size != 0 {
		if err := blocks.validate(); err != nil {
			return api.Endpoint{}, err
		}
	}
	att := api.Attachment{ContainerID: r.ContainerID, IfName: r.IfName}
	ek := s.endpointKey(hn.Host, att)
	claim, _ := json.Marshal(PortBlockClaim{Owner: EndpointOwner(att)})
	for range maxAllocAttempts {
		if ep, err := s.endpointAt(ctx, ek); err == nil {
			return ep, nil
		} else if err != ErrNotFound {
			return api.Endpoint{}, err
		}
		used, err := s.usedIPs(ctx, hn.Host)
		if err != nil {
			return api.Endpoint{}, err
		}
		ip4, err := ipam.NextFree(hn.Subnet4, used, last)
		if err != nil {
			return api.Endpoint{}, err
		}
		ep := api.Endpoint{
			ContainerID: r.ContainerID,
			IfName:      r.IfName,
			Host:        hn.Host,
			IPv4:        ip4,
			IPv6:        ipam.Pair(ip4, hn.Subnet4, hn.Subnet6),
			Labels:      r.Labels,
			Ports:       r.Ports,
			Netns:       r.Netns,
			Created:     now.UTC().Truncate(time.Second),
		}
		ik := s.ipKey(hn.Host, ip4)
		conds := []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(ek), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(ik), "=", 0),
		}
		ops := []clientv3.Op{clientv3.OpPut(ik, att.ContainerID+"/"+att.IfName)}
		if blocks.Size != 0 {
			taken, err := s.usedPortBlocks(ctx, hn.Host)
			if err != nil {
				return api.Endpoint{}, err
			}
			for _, v6 := range []bool{false, true} {
				if v6 && !ep.IPv6.IsValid() {
					continue
				}
				start, ok := blocks.free(taken)
				if !ok {
					break
				}
				taken[start] = true
				bk := s.portBlockKey(hn.Host, start)
				conds = append(conds, clientv3.Compare(clientv3.CreateRevision(bk), "=", 0))
				ops = append(ops, clientv3.OpPut(bk, string(claim)))
				ep.PortBlocks = append(ep.PortBlocks, api.PortBlock{Start: start, Size: blocks.Size, IPv6: v6})
			}
		}
		b, err := encodeEndpoint(ep)
		if err != nil {
			return api.Endpoint{}, err
		}
		tr, err := s.cli.Txn(ctx).If(conds...).Then(append(ops, clientv3.OpPut(ek, string(b)))...).Commit()
		if err != nil {
			return api.Endpoint{}, fmt.Errorf("allocate %s: %w", ip4, err)
		}
		if tr.Succeeded {
			return ep, nil
		}
		last = ip4
	}
	return api.Endpoint{}, fmt.Errorf("allocate address for %s/%s: too many conflicts", r.ContainerID, r.IfName)
}

func (s *Store) usedIPs(ctx context.Context, host string) (map[netip.Addr]bool, error) {
	p := s.ipsPrefix(host)
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", host, err)
	}
	used := make(map[netip.Addr]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if a, err := netip.ParseAddr(strings.TrimPrefix(string(kv.Key), p)); err == nil {
			used[a] = true
		}
	}
	return used, nil
}

func (s *Store) endpointAt(ctx context.Context, key string) (api.Endpoint, error) {
	ep, _, err := s.endpointRecord(ctx, key)
	return ep, err
}

// endpointRecord reads the endpoint at key and its key-value (revision,
// lease), for a read-modify-write.
func (s *Store) endpointRecord(ctx context.Context, key string) (api.Endpoint, *mvccpb.KeyValue, error) {
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return api.Endpoint{}, nil, fmt.Errorf("read endpoint: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return api.Endpoint{}, nil, ErrNotFound
	}
	ep, err := decodeEndpoint(resp.Kvs[0].Value)
	if err != nil {
		return api.Endpoint{}, nil, fmt.Errorf("decode endpoint %s: %w", key, err)
	}
	return ep, resp.Kvs[0], nil
}

// Endpoint reads one endpoint of host.
func (s *Store) Endpoint(ctx context.Context, host string, a api.Attachment) (api.Endpoint, error) {
	return s.endpointAt(ctx, s.endpointKey(host, a))
}

// DelEndpoint releases an endpoint and its address. Releasing an absent
// endpoint succeeds.
func (s *Store) DelEndpoint(ctx context.Context, host string, a api.Attachment) error {
	ek := s.endpointKey(host, a)
	resp, err := s.cli.Get(ctx, ek)
	if err != nil {
		return fmt.Errorf("read endpoint: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	ops := []clientv3.Op{clientv3.OpDelete(ek)}
	if ep, err := decodeEndpoint(resp.Kvs[0].Value); err == nil && ep.IPv4.IsValid() {
		ops = append(ops, clientv3.OpDelete(s.ipKey(host, ep.IPv4)))
		for _, b := range ep.PortBlocks {
			ops = append(ops, clientv3.OpDelete(s.portBlockKey(host, b.Start)))
		}
	}
	// Guarded by the revision we read, so a concurrent re-ADD is not undone.
	tr, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(ek), "=", resp.Kvs[0].ModRevision)).
		Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("delete endpoint %s/%s: %w", a.ContainerID, a.IfName, err)
	}
	if !tr.Succeeded {
		return fmt.Errorf("delete endpoint %s/%s: changed concurrently, retry", a.ContainerID, a.IfName)
	}
	return nil
}

// Endpoints lists the endpoints of host straight from etcd.
func (s *Store) Endpoints(ctx context.Context, host string) ([]api.Endpoint, error) {
	resp, err := s.cli.Get(ctx, s.EndpointsPrefix()+host+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list endpoints of %s: %w", host, err)
	}
	out := make([]api.Endpoint, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ep, err := decodeEndpoint(kv.Value)
		if err != nil {
			continue // a corrupt record must not block listing the rest
		}
		out = append(out, ep)
	}
	return out, nil
}

// EndpointOwner is how port block claims name an endpoint.
func EndpointOwner(a api.Attachment) string { return a.ContainerID + "/" + a.IfName }

// AddEndpointBlock claims one more source port block of r for the
// endpoint and records it in the endpoint, in one transaction that fails
// (and is retried) if the endpoint changed or the block was taken
// meanwhile. It returns the endpoint and the store revision of the write
// (for Cache.WaitRev).
func (s *Store) AddEndpointBlock(ctx context.Context, host string, a api.Attachment, r BlockRange, ipv6 bool) (api.Endpoint, int64, error) {
	if err := r.validate(); err != nil {
		return api.Endpoint{}, 0, err
	}
	ek := s.endpointKey(host, a)
	claim, _ := json.Marshal(PortBlockClaim{Owner: EndpointOwner(a)})
	for range maxClaimAttempts {
		ep, kv, err := s.endpointRecord(ctx, ek)
		if err != nil {
			return api.Endpoint{}, 0, err
		}
		used, err := s.usedPortBlocks(ctx, host)
		if err != nil {
			return ep, 0, err
		}
		start, ok := r.free(used)
		if !ok {
			return ep, 0, s.exhausted(host, r)
		}
		ep.PortBlocks = append(ep.PortBlocks, api.PortBlock{Start: start, Size: r.Size, IPv6: ipv6})
		v, err := encodeEndpoint(ep)
		if err != nil {
			return ep, 0, err
		}
		bk := s.portBlockKey(host, start)
		tr, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(ek), "=", kv.ModRevision),
				clientv3.Compare(clientv3.CreateRevision(bk), "=", 0)).
			Then(clientv3.OpPut(ek, string(v)), clientv3.OpPut(bk, string(claim))).Commit()
		if err != nil {
			return ep, 0, fmt.Errorf("claim port block %d for %s: %w", start, EndpointOwner(a), err)
		}
		if tr.Succeeded {
			return ep, tr.Header.Revision, nil
		}
	}
	return api.Endpoint{}, 0, fmt.Errorf("claim port block on %s for %s: still contended after %d attempts", host, EndpointOwner(a), maxClaimAttempts)
}

// LabelEndpoint changes the labels of host's endpoint a, the pod labels
// network policies select on, in a transaction guarded by the revision it
// read (retried), keeping the record's lease. The namespace and pod name
// labels are the runtime's and cannot change. It returns the endpoint and
// the revision of the write (for Cache.WaitRev).
func (s *Store) LabelEndpoint(ctx context.Context, host string, a api.Attachment, change api.LabelChange) (api.Endpoint, int64, error) {
	for k := range change.Set {
		if k == api.LabelPodNamespace || k == api.LabelPodName {
			return api.Endpoint{}, 0, fmt.Errorf("%w: label %s is the runtime's", ErrInvalid, k)
		}
	}
	for _, k := range change.Remove {
		if k == api.LabelPodNamespace || k == api.LabelPodName {
			return api.Endpoint{}, 0, fmt.Errorf("%w: label %s is the runtime's", ErrInvalid, k)
		}
	}
	ek := s.endpointKey(host, a)
	for range maxClaimAttempts {
		ep, kv, err := s.endpointRecord(ctx, ek)
		if err != nil {
			return api.Endpoint{}, 0, err
		}
		labels := change.Apply(ep.Labels)
		if err := api.ValidateLabels(labels); err != nil {
			return api.Endpoint{}, 0, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		ep.Labels = labels
		v, err := encodeEndpoint(ep)
		if err != nil {
			return ep, 0, err
		}
		var opts []clientv3.OpOption
		if kv.Lease != 0 {
			opts = append(opts, clientv3.WithLease(clientv3.LeaseID(kv.Lease)))
		}
		tr, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(ek), "=", kv.ModRevision)).
			Then(clientv3.OpPut(ek, string(v), opts...)).Commit()
		if err != nil {
			return ep, 0, fmt.Errorf("label endpoint %s: %w", EndpointOwner(a), err)
		}
		if tr.Succeeded {
			return ep, tr.Header.Revision, nil
		}
	}
	return api.Endpoint{}, 0, fmt.Errorf("label endpoint %s: still contended after %d attempts", EndpointOwner(a), maxClaimAttempts)
}
