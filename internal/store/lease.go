package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Lease keeps one etcd lease alive for a host and re-creates it if it is
// lost. The lease ID is remembered in a file so that a restarted slimd
// takes its still-live lease back: then a restart inside the TTL never
// makes the host disappear from the other hosts' tables, and their
// overlay entries for it are never removed.
type Lease struct {
	cli  *clientv3.Client
	ttl  time.Duration
	file string
	log  *slog.Logger
	// attach (re)writes the keys that hang on the lease; it is called with
	// every new lease and again periodically to repair deleted keys.
	attach func(ctx context.Context, id clientv3.LeaseID) error

	id atomic.Int64
	// contact is when the store last answered for the lease (unix ns).
	contact atomic.Int64
}

// LeaseConfig configures a Lease.
type LeaseConfig struct {
	Client *clientv3.Client
	TTL    time.Duration
	File   string // where the lease ID is remembered; empty = not remembered
	Log    *slog.Logger
	Attach func(ctx context.Context, id clientv3.LeaseID) error
}

// NewLease returns a lease keeper.
func NewLease(cfg LeaseConfig) *Lease {
	return &Lease{cli: cfg.Client, ttl: cfg.TTL, file: cfg.File, log: cfg.Log, attach: cfg.Attach}
}

// ID returns the current lease (0 before the first grant).
func (l *Lease) ID() clientv3.LeaseID { return clientv3.LeaseID(l.id.Load()) }

// LastContact is when the store last answered for the lease: every
// keepalive (a third of the TTL) while it is reachable.
func (l *Lease) LastContact() time.Time {
	if n := l.contact.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (l *Lease) touch() { l.contact.Store(time.Now().UnixNano()) }

// Acquire obtains the lease (reusing the remembered one if it is still
// alive) and attaches the keys once. Run keeps it alive afterwards.
func (l *Lease) Acquire(ctx context.Context) error {
	id, err := l.obtain(ctx)
	if err != nil {
		return err
	}
	if err := l.attach(ctx, id); err != nil {
		return err
	}
	l.id.Store(int64(id))
	l.touch()
	return nil
}

func (l *Lease) obtain(ctx context.Context) (clientv3.LeaseID, error) {
	if old := l.remembered(); old != 0 {
		ttl, err := l.cli.TimeToLive(ctx, old)
		if err == nil && ttl.TTL > 0 {
			l.log.Info("reusing live lease", "lease", fmt.Sprintf("%x", int64(old)), "remaining", ttl.TTL)
			return old, nil
		}
	}
	secs := int64(l.ttl / time.Second)
	if secs < 2 {
		secs = 2
	}
	g, err := l.cli.Grant(ctx, secs)
	if err != nil {
		return 0, fmt.Errorf("grant lease: %w", err)
	}
	l.remember(g.ID)
	l.log.Info("granted lease", "lease", fmt.Sprintf("%x", int64(g.ID)), "ttl", secs)
	return g.ID, nil
}

func (l *Lease) remembered() clientv3.LeaseID {
	if l.file == "" {
		return 0
	}
	b, err := os.ReadFile(l.file)
	if err != nil {
		return 0
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 16, 64)
	if err != nil {
		return 0
	}
	return clientv3.LeaseID(v)
}

func (l *Lease) remember(id clientv3.LeaseID) {
	if l.file == "" {
		return
	}
	tmp := l.file + ".tmp"
	if err := os.MkdirAll(filepath.Dir(l.file), 0o700); err == nil {
		if os.WriteFile(tmp, []byte(fmt.Sprintf("%x\n", int64(id))), 0o600) == nil {
			_ = os.Rename(tmp, l.file)
		}
	}
}

// Run keeps the lease alive until ctx ends. It does not revoke the lease
// on exit: a stopping slimd leaves its host record to expire by TTL, so a
// restart in time is invisible to the cluster.
func (l *Lease) Run(ctx context.Context) error {
	backoff := minBackoff
	repair := time.NewTicker(l.ttl)
	defer repair.Stop()
	for ctx.Err() == nil {
		id := l.ID()
		if id == 0 {
			if err := l.Acquire(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				l.log.Warn("lease acquire failed, retrying", "err", err, "backoff", backoff)
				sleep(ctx, backoff)
				backoff = min(2*backoff, maxBackoff)
				continue
			}
			backoff = minBackoff
			id = l.ID()
		}
		kctx, cancel := context.WithCancel(ctx)
		ch, err := l.cli.KeepAlive(kctx, id)
		if err != nil {
			cancel()
			l.log.Warn("lease keepalive failed", "err", err)
			l.id.Store(0)
			continue
		}
		lost := l.drain(ctx, ch, repair.C, id)
		cancel()
		if lost {
			l.log.Warn("lease lost, re-acquiring", "lease", fmt.Sprintf("%x", int64(id)))
			l.id.Store(0)
		}
	}
	return nil
}

// drain consumes keepalive answers and periodically re-attaches the keys
// (someone may have deleted them). It returns true if the lease was lost.
func (l *Lease) drain(ctx context.Context, ch <-chan *clientv3.LeaseKeepAliveResponse, repair <-chan time.Time, id clientv3.LeaseID) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case _, ok := <-ch:
			if !ok {
				return true
			}
			l.touch()
		case <-repair:
			actx, cancel := context.WithTimeout(ctx, l.ttl)
			err := l.attach(actx, id)
			cancel()
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return true
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				l.log.Debug("lease key repair failed", "err", err)
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
