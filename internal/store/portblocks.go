package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/slimnet/slim/internal/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Port blocks: ranges of host ports reserved for one owner, keyed
//
//	<p>/portblocks/<host>/<start>         PortBlockClaim (permanent until released)

// PortBlockClaim records who holds a block of host source ports.
type PortBlockClaim struct {
	Owner string `json:"owner"` // "<container>/<if>", or ListenerOwner
}

// ListenerOwner owns the blocks a host takes host listener ports from.
const ListenerOwner = "listeners"

func (s *Store) portBlocksPrefix(host string) string { return s.prefix + "/portblocks/" + host + "/" }

func (s *Store) portBlockKey(host string, start uint16) string {
	return s.portBlocksPrefix(host) + strconv.Itoa(int(start))
}

// BlockRange is the host port range [First, Last] that source port blocks
// of Size ports are cut from. Blocks are aligned to their size so a port
// maps to its block with a mask (what the BPF programs do).
type BlockRange struct {
	First, Last, Size uint16
}

func (r BlockRange) validate() error {
	if r.Size == 0 || r.Size&(r.Size-1) != 0 {
		return fmt.Errorf("port block size %d: want a power of two", r.Size)
	}
	return nil
}

// free returns the lowest aligned block of r that is not in used.
func (r BlockRange) free(used map[uint16]bool) (uint16, bool) {
	size := int(r.Size)
	for b := (int(r.First) + size - 1) &^ (size - 1); b+size-1 <= int(r.Last); b += size {
		if !used[uint16(b)] {
			return uint16(b), true
		}
	}
	return 0, false
}

func (s *Store) exhausted(host string, r BlockRange) error {
	return fmt.Errorf("no free port block of %d in %d-%d on %s: %w", r.Size, r.First, r.Last, host, ErrExhausted)
}

// ClaimPortBlock claims the lowest free block of r on host for owner.
func (s *Store) ClaimPortBlock(ctx context.Context, host, owner string, r BlockRange) (api.PortBlock, error) {
	if err := r.validate(); err != nil {
		return api.PortBlock{}, err
	}
	claim, _ := json.Marshal(PortBlockClaim{Owner: owner})
	for range maxClaimAttempts {
		used, err := s.usedPortBlocks(ctx, host)
		if err != nil {
			return api.PortBlock{}, err
		}
		start, ok := r.free(used)
		if !ok {
			return api.PortBlock{}, s.exhausted(host, r)
		}
		k := s.portBlockKey(host, start)
		tr, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, string(claim))).Commit()
		if err != nil {
			return api.PortBlock{}, fmt.Errorf("claim port block %d: %w", start, err)
		}
		if tr.Succeeded {
			return api.PortBlock{Start: start, Size: r.Size}, nil
		}
	}
	return api.PortBlock{}, fmt.Errorf("claim port block on %s: still contended after %d attempts", host, maxClaimAttempts)
}

func (s *Store) usedPortBlocks(ctx context.Context, host string) (map[uint16]bool, error) {
	p := s.portBlocksPrefix(host)
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list port blocks of %s: %w", host, err)
	}
	used := make(map[uint16]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if n, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), p)); err == nil && n >= 0 && n < 1<<16 {
			used[uint16(n)] = true
		}
	}
	return used, nil
}

// PortBlocks lists host's claimed blocks: start -> owner.
func (s *Store) PortBlocks(ctx context.Context, host string) (map[uint16]string, error) {
	p := s.portBlocksPrefix(host)
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list port blocks of %s: %w", host, err)
	}
	out := make(map[uint16]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		n, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), p))
		var c PortBlockClaim
		if err == nil && json.Unmarshal(kv.Value, &c) == nil {
			out[uint16(n)] = c.Owner
		}
	}
	return out, nil
}

// ReleasePortBlocks releases every block of host that owner holds.
func (s *Store) ReleasePortBlocks(ctx context.Context, host, owner string) error {
	blocks, err := s.PortBlocks(ctx, host)
	if err != nil {
		return err
	}
	for start, o := range blocks {
		if o != owner {
			continue
		}
		if _, err := s.cli.Delete(ctx, s.portBlockKey(host, start)); err != nil {
			return fmt.Errorf("release port block %d: %w", start, err)
		}
	}
	return nil
}
