package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/slimnet/slim/internal/api"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Cache mirrors every key under a prefix into memory, decoded as T. It
// lists in pages at one revision, then watches from that revision. After a
// watch error it backs off and watches again from the last revision it
// applied, so a reconnect reads only what changed; only when etcd has
// compacted that revision away does it list everything again. It never
// misses an update silently.
type Cache[T any] struct {
	cli      *clientv3.Client
	prefix   string
	log      *slog.Logger
	onChange func()
	decode   func([]byte) (T, error)
	// OnResync, if set, is called each time the cache re-lists after an error.
	OnResync func()
	// OnEvent, if set, is called for every key a watch event changes,
	// after the cache applied it, from the cache's goroutine; it must not
	// block (the control-plane benchmark times propagation with it).
	OnEvent func(key string, deleted bool)

	// newItems makes the (empty) store of the decoded values.
	newItems func() items[T]

	mu     sync.RWMutex
	items  items[T]         // key without prefix -> value
	leases map[string]int64 // key without prefix -> the record's lease (only non-zero ones)
	synced bool
	// rev is the store revision the cache has applied: the list's, then
	// each watch response's. progress is closed (and replaced) whenever
	// rev advances, to wake WaitRev.
	rev      int64
	progress chan struct{}
	// listed counts the bytes (keys and values) of the last full list.
	listed int64
	// trackers record the keys each change touches, for consumers that
	// apply deltas (Track, Drain).
	trackers []*Changes[T]
}

// Changes records which keys of a cache changed, and what each held
// before its first change, since its consumer last drained it: what that
// consumer needs to apply a change as a delta instead of reading the whole
// cache again (docs/scale.md: at 200,000 endpoints a full read per change
// is most of a core).
type Changes[T any] struct {
	mu  sync.Mutex
	old map[string]prior[T]
	// all: the cache listed everything again, so any key may have changed.
	all bool
}

type prior[T any] struct {
	v   T
	had bool
}

// Track returns a new record of this cache's changes, starting with
// everything: the consumer's first Drain reads the whole cache, so it may
// start tracking at any time.
func (c *Cache[T]) Track() *Changes[T] {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &Changes[T]{old: map[string]prior[T]{}, all: true}
	c.trackers = append(c.trackers, t)
	return t
}

// Drain hands t's changes to its consumer and starts t afresh, all under
// the cache's read lock so that the values agree with one another. If the
// cache listed everything since the last Drain (or t is new), reset is
// called and then fn once for every cached key, with had false.
// Otherwise fn is called once per changed key with what the key held
// before its first change since the last Drain (old, had) and what it
// holds now (cur, ok). fn must be quick and must not call the cache.
func (c *Cache[T]) Drain(t *Changes[T], reset func(), fn func(key string, old T, had bool, cur T, ok bool)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	t.mu.Lock()
	old, all := t.old, t.all
	t.old, t.all = map[string]prior[T]{}, false
	t.mu.Unlock()
	var zero T
	if all {
		reset()
		c.items.all(func(k string, v T) bool {
			fn(k, zero, false, v, true)
			return true
		})
		return
	}
	for k, p := range old {
		v, ok := c.items.get(k)
		fn(k, p.v, p.had, v, ok)
	}
}

// Range calls fn for every cached item, under the cache's read lock
// (without copying the cache, as Snapshot does) until fn returns false;
// fn must be quick and must not call this cache: a read lock taken again
// while the watch waits to write deadlocks.
func (c *Cache[T]) Range(fn func(key string, v T) bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	c.items.all(fn)
}

// noteLocked records, before the cache changes key, what it held; mu is
// held for writing.
func (c *Cache[T]) noteLocked(key string) {
	if len(c.trackers) == 0 {
		return
	}
	v, had := c.items.get(key)
	for _, t := range c.trackers {
		t.mu.Lock()
		if _, seen := t.old[key]; !seen && !t.all {
			t.old[key] = prior[T]{v, had}
		}
		t.mu.Unlock()
	}
}

// listPage is how many keys one list request reads: a cold start at
// 200,000 endpoints takes 100 requests of about 300 kB instead of one of
// 60 MB that etcd and the cache would both hold at once.
const listPage = 2000

// newCache returns a cache of prefix whose records decode reads;
// onChange (may be nil) is called after every change, from the cache's
// goroutine, and must not block.
func newCache[T any](cli *clientv3.Client, prefix string, decode func([]byte) (T, error), log *slog.Logger, onChange func()) *Cache[T] {
	return newCacheOf(cli, prefix, decode, func() items[T] { return plainItems[T]{} }, log, onChange)
}

// newCacheOf is newCache with the store of decoded values newItems makes.
func newCacheOf[T any](cli *clientv3.Client, prefix string, decode func([]byte) (T, error), newItems func() items[T], log *slog.Logger, onChange func()) *Cache[T] {
	if onChange == nil {
		onChange = func() {}
	}
	return &Cache[T]{cli: cli, prefix: prefix, decode: decode, newItems: newItems, log: log, onChange: onChange, items: newItems(), leases: map[string]int64{},
		progress: make(chan struct{})}
}

// HostCache is a cache of the host records, keyed by host name. onChange
// (may be nil) is called after every change, from the cache's goroutine,
// and must not block; so for the caches below.
func (s *Store) HostCache(log *slog.Logger, onChange func()) *Cache[api.Host] {
	return newCache(s.cli, s.HostsPrefix(), decodeHost, log, onChange)
}

// EndpointCache is a cache of every host's endpoints, keyed
// "<host>/<container>/<if>". It keeps the netns paths of self's
// endpoints only (of every endpoint if self is ""): no other host can
// enter a container's namespace, and the paths are a fifth of what a
// packed endpoint costs.
func (s *Store) EndpointCache(self string, log *slog.Logger, onChange func()) *Cache[api.Endpoint] {
	return newCacheOf(s.cli, s.EndpointsPrefix(), decodeEndpoint, func() items[api.Endpoint] { return newEndpointItems(self) }, log, onChange)
}

// ListenerCache is a cache of the published listeners, keyed by
// ListenerKey.
func (s *Store) ListenerCache(log *slog.Logger, onChange func()) *Cache[api.Listener] {
	return newCache(s.cli, s.ListenersPrefix(), decodeListener, log, onChange)
}

// FastPathCache is a cache of the fast-path switch, under the key "".
func (s *Store) FastPathCache(log *slog.Logger, onChange func()) *Cache[FastPath] {
	return newCache(s.cli, s.fastPathKey(), decodeFastPath, log, onChange)
}

// Backoff bounds for re-listing after a watch failure: fast enough to
// notice a restarted etcd within a second or two, slow enough not to hammer
// one that is down.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Run keeps the cache in sync until ctx ends.
func (c *Cache[T]) Run(ctx context.Context) error {
	backoff := minBackoff
	relist := true
	first := true
	for {
		var err error
		if relist {
			err = c.list(ctx)
			if err == nil {
				if !first {
					c.log.Info("store cache resynced", "prefix", c.prefix, "keys", c.Len())
					if c.OnResync != nil {
						c.OnResync()
					}
				}
				first = false
				relist = false
				backoff = minBackoff
			}
		}
		if err == nil {
			var progressed bool
			progressed, err = c.watch(ctx)
			if progressed {
				backoff = minBackoff
			}
			// Only a compacted revision needs everything read again.
			relist = errors.Is(err, rpctypes.ErrCompacted)
		}
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("store watch lost", "prefix", c.prefix, "err", err, "relist", relist, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// list reads every key under the prefix in pages, all at the revision of
// the first page, and replaces the cache's contents with them.
func (c *Cache[T]) list(ctx context.Context) error {
	items := c.newItems()
	leases := map[string]int64{}
	var rev, read int64
	end := clientv3.GetPrefixRangeEnd(c.prefix)
	from := c.prefix
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := c.cli.Get(ctx, from, opts...)
		if err != nil {
			return fmt.Errorf("list: %w", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			read += int64(len(kv.Key) + len(kv.Value))
			if v, ok := c.decodeKV(kv); ok {
				k := string(bytes.TrimPrefix(kv.Key, []byte(c.prefix)))
				items.set(k, v)
				if kv.Lease != 0 {
					leases[k] = kv.Lease
				}
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	c.mu.Lock()
	c.items, c.leases = items, leases
	for _, t := range c.trackers {
		t.mu.Lock()
		t.old, t.all = map[string]prior[T]{}, true
		t.mu.Unlock()
	}
	c.synced = true
	c.listed = read
	// A re-list may go back to a revision below one a watch applied
	// (the store restored from a backup): take it as it is.
	c.rev = 0
	c.advanceLocked(rev)
	c.mu.Unlock()
	c.onChange()
	return nil
}

// watch applies events from the revision after the last applied one until
// the watch fails; progressed says whether it applied any response.
func (c *Cache[T]) watch(ctx context.Context) (progressed bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wc := c.cli.Watch(wctx, c.prefix, clientv3.WithPrefix(), clientv3.WithRev(c.Rev()+1))
	for wr := range wc {
		if err := wr.Err(); err != nil {
			return progressed, err
		}
		if wr.Canceled {
			return progressed, errors.New("watch canceled")
		}
		progressed = true
		c.mu.Lock()
		for _, ev := range wr.Events {
			k := string(bytes.TrimPrefix(ev.Kv.Key, []byte(c.prefix)))
			c.noteLocked(k)
			switch ev.Type {
			case mvccpb.PUT:
				delete(c.leases, k)
				if v, ok := c.decodeKV(ev.Kv); ok {
					c.items.set(k, v)
					if ev.Kv.Lease != 0 {
						c.leases[k] = ev.Kv.Lease
					}
				} else {
					c.items.del(k)
				}
			case mvccpb.DELETE:
				c.items.del(k)
				delete(c.leases, k)
			}
		}
		c.advanceLocked(wr.Header.Revision)
		c.mu.Unlock()
		if c.OnEvent != nil {
			for _, ev := range wr.Events {
				c.OnEvent(strings.TrimPrefix(string(ev.Kv.Key), c.prefix), ev.Type == mvccpb.DELETE)
			}
		}
		if len(wr.Events) > 0 {
			c.onChange()
		}
	}
	return progressed, errors.New("watch channel closed")
}

func (c *Cache[T]) decodeKV(kv *mvccpb.KeyValue) (T, bool) {
	v, err := c.decode(kv.Value)
	if err != nil {
		// A record we cannot read is skipped, not fatal: one bad writer
		// must not take every host's view down.
		c.log.Warn("skipping undecodable store record", "key", string(kv.Key), "err", err)
		return v, false
	}
	return v, true
}

// Synced reports whether the cache has listed at least once.
func (c *Cache[T]) Synced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.synced
}

// Snapshot returns a copy of the cache, keyed by key without the prefix.
func (c *Cache[T]) Snapshot() (map[string]T, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m := make(map[string]T, c.items.len())
	c.items.all(func(k string, v T) bool {
		m[k] = v
		return true
	})
	return m, c.synced
}

// Get returns one item by key without the prefix.
func (c *Cache[T]) Get(key string) (T, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.items.get(key)
}

// advanceLocked records that the cache has applied revision rev; mu is
// held.
func (c *Cache[T]) advanceLocked(rev int64) {
	if rev > c.rev {
		c.rev = rev
		close(c.progress)
		c.progress = make(chan struct{})
	}
}

// Rev is the store revision the cache has applied.
func (c *Cache[T]) Rev() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.rev
}

// WaitRev waits until the cache has applied revision rev (a write under
// its prefix returns the revision to wait for), or ctx ends (its error).
func (c *Cache[T]) WaitRev(ctx context.Context, rev int64) error {
	for {
		c.mu.RLock()
		done, progress := c.rev >= rev, c.progress
		c.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("cache of %s at revision %d, waiting for %d: %w", c.prefix, c.Rev(), rev, ctx.Err())
		}
	}
}

// Lease returns the lease a record is attached to (0: none).
func (c *Cache[T]) Lease(key string) int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.leases[key]
}

// ListedBytes is the size of the keys and values the last full list read.
func (c *Cache[T]) ListedBytes() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.listed
}

// Len is the number of cached items.
func (c *Cache[T]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.items.len()
}
