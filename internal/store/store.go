// Package store keeps Slim's cluster state in etcd v3: the cluster
// configuration, host subnet claims, host records on leases, and endpoint
// allocations. It also provides watch-fed caches so that nothing on a hot
// path touches the network.
//
// Key schema, all under one prefix (default "/slim"):
//
//	<p>/config                            ClusterConfig, written once by the first host
//	<p>/slots/<n>                         SlotClaim: host subnet slot n belongs to a host (permanent)
//	<p>/hostslot/<host>                   n, the reverse index (permanent)
//	<p>/hosts/<host>                      api.Host, on the host's lease
//	<p>/endpoints/<host>/<container>/<if> api.Endpoint (permanent until CNI DEL or GC)
//	<p>/ips/<host>/<ipv4>                 "<container>/<if>", the allocation guard (permanent)
//
// Slot claims are permanent rather than leased: addresses of containers
// that keep running while their slimd is down must never be handed to
// another host. Freeing a host's slot for good is an operator action
// (ForgetHost).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/ipam"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPrefix is the key prefix unless configured otherwise.
const DefaultPrefix = "/slim"

// Errors callers branch on.
var (
	ErrNotFound       = errors.New("not found")
	ErrConfigMismatch = errors.New("cluster configuration mismatch")
	// ErrExhausted: no address or port block is free on the host.
	ErrExhausted = ipam.ErrExhausted
)

// ClusterConfig is shared by every host; the first slimd writes it.
type ClusterConfig struct {
	Cluster4  netip.Prefix `json:"cluster4"`
	HostBits4 int          `json:"hostBits4"`
	Cluster6  netip.Prefix `json:"cluster6,omitzero"`
	HostBits6 int          `json:"hostBits6,omitempty"`
	VNI       int          `json:"vni"`
	Port      int          `json:"port"`
}

// Plan returns the address plan of the configuration.
func (c ClusterConfig) Plan() ipam.Plan {
	return ipam.Plan{Cluster4: c.Cluster4, HostBits4: c.HostBits4, Cluster6: c.Cluster6, HostBits6: c.HostBits6}
}

// SlotClaim records who holds a host subnet slot.
type SlotClaim struct {
	Host string `json:"host"`
}

// Store is the typed view of the etcd keyspace.
type Store struct {
	cli    *clientv3.Client
	prefix string
}

// New returns a store using cli under prefix.
func New(cli *clientv3.Client, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{cli: cli, prefix: strings.TrimSuffix(prefix, "/")}
}

// Client returns the etcd client.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Key helpers.
func (s *Store) configKey() string           { return s.prefix + "/config" }
func (s *Store) slotKey(n int) string        { return s.prefix + "/slots/" + strconv.Itoa(n) }
func (s *Store) hostSlotKey(h string) string { return s.prefix + "/hostslot/" + h }

// HostsPrefix is where host records live.
func (s *Store) HostsPrefix() string                 { return s.prefix + "/hosts/" }
func (s *Store) hostKey(h string) string             { return s.HostsPrefix() + h }
func (s *Store) slotsPrefix() string                 { return s.prefix + "/slots/" }
func (s *Store) ipsPrefix(h string) string           { return s.prefix + "/ips/" + h + "/" }
func (s *Store) ipKey(h string, a netip.Addr) string { return s.ipsPrefix(h) + a.String() }

// EndpointsPrefix is where endpoint records live.
func (s *Store) EndpointsPrefix() string { return s.prefix + "/endpoints/" }
func (s *Store) endpointKey(h string, a api.Attachment) string {
	return s.EndpointsPrefix() + h + "/" + a.ContainerID + "/" + a.IfName
}

// EnsureConfig writes want if no configuration exists, and otherwise
// checks that the stored one matches: hosts of one cluster must agree on
// the address plan and the VXLAN parameters.
func (s *Store) EnsureConfig(ctx context.Context, want ClusterConfig) (ClusterConfig, error) {
	if err := want.Plan().Validate(); err != nil {
		return want, err
	}
	b, err := json.Marshal(want)
	if err != nil {
		return want, err
	}
	k := s.configKey()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(b))).
		Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return want, fmt.Errorf("ensure cluster config: %w", err)
	}
	if resp.Succeeded {
		return want, nil
	}
	var have ClusterConfig
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return want, fmt.Errorf("cluster config vanished during read")
	}
	if err := json.Unmarshal(kvs[0].Value, &have); err != nil {
		return want, fmt.Errorf("decode cluster config: %w", err)
	}
	if have != want {
		return have, fmt.Errorf("%w: store has %+v, this host is configured with %+v", ErrConfigMismatch, have, want)
	}
	return have, nil
}

// maxClaimAttempts bounds the optimistic slot-claim loop; each failed
// attempt means another host won a race, so this many hosts joining at
// once is the limit before we report an error and slimd retries.
const maxClaimAttempts = 64

// ClaimSlot returns the host's subnet slot, claiming the lowest free one if
// the host has none. Claims are made by one etcd transaction that creates
// both the slot key and the host's reverse key only if neither exists, so
// no two hosts can ever hold the same slot, and a host never holds two.
func (s *Store) ClaimSlot(ctx context.Context, host string, plan ipam.Plan) (int, error) {
	hk := s.hostSlotKey(host)
	for range maxClaimAttempts {
		resp, err := s.cli.Get(ctx, hk)
		if err != nil {
			return 0, fmt.Errorf("read slot of %s: %w", host, err)
		}
		if len(resp.Kvs) == 1 {
			n, err := strconv.Atoi(string(resp.Kvs[0].Value))
			if err != nil {
				return 0, fmt.Errorf("slot of %s: bad value %q", host, resp.Kvs[0].Value)
			}
			return n, nil
		}
		used, err := s.usedSlots(ctx)
		if err != nil {
			return 0, err
		}
		n, err := plan.FreeSlot(used)
		if err != nil {
			return 0, err
		}
		claim, _ := json.Marshal(SlotClaim{Host: host})
		sk := s.slotKey(n)
		tr, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(sk), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(hk), "=", 0)).
			Then(clientv3.OpPut(sk, string(claim)), clientv3.OpPut(hk, strconv.Itoa(n))).
			Commit()
		if err != nil {
			return 0, fmt.Errorf("claim slot %d for %s: %w", n, host, err)
		}
		if tr.Succeeded {
			return n, nil
		}
		// Lost a race: re-read and try again.
	}
	return 0, fmt.Errorf("claim slot for %s: still contended after %d attempts", host, maxClaimAttempts)
}

func (s *Store) usedSlots(ctx context.Context) (map[int]bool, error) {
	resp, err := s.cli.Get(ctx, s.slotsPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list slots: %w", err)
	}
	used := make(map[int]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		n, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), s.slotsPrefix()))
		if err == nil {
			used[n] = true
		}
	}
	return used, nil
}

// Slots lists every claim: slot number -> host.
func (s *Store) Slots(ctx context.Context) (map[int]string, error) {
	resp, err := s.cli.Get(ctx, s.slotsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list slots: %w", err)
	}
	out := make(map[int]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		n, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), s.slotsPrefix()))
		if err != nil {
			continue
		}
		var c SlotClaim
		if json.Unmarshal(kv.Value, &c) == nil {
			out[n] = c.Host
		}
	}
	return out, nil
}

// PutHost writes the host record on lease.
func (s *Store) PutHost(ctx context.Context, h api.Host, lease clientv3.LeaseID) error {
	b, err := encodeHost(h)
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, s.hostKey(h.Name), string(b), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("put host %s: %w", h.Name, err)
	}
	return nil
}

// ForgetHost removes every record of a host, its slot claim included. Only
// for hosts that are gone for good.
func (s *Store) ForgetHost(ctx context.Context, host string) error {
	resp, err := s.cli.Get(ctx, s.hostSlotKey(host))
	if err != nil {
		return err
	}
	ops := []clientv3.Op{
		clientv3.OpDelete(s.hostKey(host)),
		clientv3.OpDelete(s.hostSlotKey(host)),
		clientv3.OpDelete(s.EndpointsPrefix()+host+"/", clientv3.WithPrefix()),
		clientv3.OpDelete(s.ipsPrefix(host), clientv3.WithPrefix()),
	}
	if len(resp.Kvs) == 1 {
		if n, err := strconv.Atoi(string(resp.Kvs[0].Value)); err == nil {
			ops = append(ops, clientv3.OpDelete(s.slotKey(n)))
		}
	}
	_, err = s.cli.Txn(ctx).Then(ops...).Commit()
	return err
}

// CountKeys counts the keys under the prefix (leak checks, status).
func (s *Store) CountKeys(ctx context.Context) (int64, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}
