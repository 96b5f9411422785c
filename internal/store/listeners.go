package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/slimnet/slim/internal/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Listeners and the fast-path switch, keyed
//
//	<p>/listeners/<vip>/<vport>           api.Listener, on the listening host's lease
//	<p>/fastpath                          FastPath: the cluster-wide switch

// FastPath is the cluster-wide fast-path switch. Absent means enabled.
type FastPath struct {
	Enabled bool `json:"enabled"`
}

func (s *Store) fastPathKey() string { return s.prefix + "/fastpath" }

// ListenersPrefix is where published listeners live.
func (s *Store) ListenersPrefix() string { return s.prefix + "/listeners/" }

// ListenerKey is the cache key (without prefix) of a listener.
func ListenerKey(vip netip.Addr, vport uint16) string {
	return vip.String() + "/" + strconv.Itoa(int(vport))
}

// SetFastPath sets the cluster-wide switch and returns the store revision
// of the write.
func (s *Store) SetFastPath(ctx context.Context, enabled bool) (int64, error) {
	b, _ := json.Marshal(FastPath{Enabled: enabled})
	resp, err := s.cli.Put(ctx, s.fastPathKey(), string(b))
	if err != nil {
		return 0, fmt.Errorf("set fast path: %w", err)
	}
	return resp.Header.Revision, nil
}

// FastPathKey is the key of the switch, for watching it.
func (s *Store) FastPathKey() string { return s.fastPathKey() }

// PutListener publishes a listener on the host's lease and returns the
// store revision of the write (for Cache.WaitRev).
func (s *Store) PutListener(ctx context.Context, l api.Listener, lease clientv3.LeaseID) (int64, error) {
	b, err := encodeListener(l)
	if err != nil {
		return 0, err
	}
	k := s.ListenersPrefix() + ListenerKey(l.VIP, l.Port)
	resp, err := s.cli.Put(ctx, k, string(b), clientv3.WithLease(lease))
	if err != nil {
		return 0, fmt.Errorf("publish listener %s: %w", k, err)
	}
	return resp.Header.Revision, nil
}

// DeleteListener withdraws a listener, but only if host still owns it (a
// container that moved may already have re-published it elsewhere).
func (s *Store) DeleteListener(ctx context.Context, host string, vip netip.Addr, vport uint16) error {
	k := s.ListenersPrefix() + ListenerKey(vip, vport)
	// A write between the read and the delete (this host publishing the
	// record again) fails the guard: read again rather than leave the
	// record behind.
	for range maxClaimAttempts {
		resp, err := s.cli.Get(ctx, k)
		if err != nil {
			return fmt.Errorf("read listener %s: %w", k, err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		if l, err := decodeListener(resp.Kvs[0].Value); err == nil && l.Host != host {
			return nil
		}
		tr, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(k), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpDelete(k)).Commit()
		if err != nil {
			return fmt.Errorf("delete listener %s: %w", k, err)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("delete listener %s: still changing after %d attempts", k, maxClaimAttempts)
}
