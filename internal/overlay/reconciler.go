package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

const (
	// DefaultInterval is the full resync period: drift that no event
	// announces (a route deleted by hand) is repaired within it.
	DefaultInterval = 30 * time.Second
	// retryMin and retryMax bound the backoff after a failed pass: the
	// first retry comes quickly (most failures are a transient EBUSY or a
	// dump that kept being interrupted), later ones back off so a broken
	// kernel state does not spin a core. retryMax is capped by Interval.
	retryMin = 200 * time.Millisecond
	retryMax = 10 * time.Second
	// notSyncedPoll is how often the store is asked again while it is not
	// synced, in case nobody calls Trigger when it is.
	notSyncedPoll = time.Second
)

// errNotSynced ends a pass in which the store was not synced yet.
var errNotSynced = errors.New("store not synced")

// ReconcilerConfig configures a Reconciler.
type ReconcilerConfig struct {
	Dataplane Dataplane
	// Desired returns the peers the store wants (without the local host);
	// ok=false means the store is not synced yet, and then the reconciler
	// changes nothing (it never removes peers on an unsynced, unknown state).
	Desired  func() (peers []Peer, ok bool)
	Interval time.Duration // full resync period, default DefaultInterval
	Log      *slog.Logger  // nil: discard
	// OnApply is called after every pass that applied a diff (also an empty
	// one), with the number of peers ensured, removed and operations failed.
	// Optional, for metrics.
	OnApply func(ensured, removed, failed int)
}

// Reconciler keeps the kernel's peers equal to the desired ones. Store
// events only mark it dirty (Trigger); each pass diffs the desired peers
// against Dataplane.Peers and applies the difference.
type Reconciler struct {
	cfg        ReconcilerConfig
	log        *slog.Logger
	dirty      chan struct{}
	programmed atomic.Int64
	// applied is what the last successful pass left in the kernel (nil:
	// unknown). A pass for a trigger diffs against it; reading every
	// peer back from netlink for each host that joins made a 2,000-host
	// cluster's arrival quadratic (docs/scale.md). Interval passes and
	// retries read the kernel back and repair drift.
	applied []Peer
}

// NewReconciler returns a Reconciler. Run starts it.
func NewReconciler(cfg ReconcilerConfig) *Reconciler {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{cfg: cfg, log: log, dirty: make(chan struct{}, 1)}
}

// Trigger marks the state dirty, so that Run makes a pass soon. It never
// blocks, and triggers that arrive before the pass starts coalesce into it.
// Triggers during a retry backoff wait for the backoff to end.
func (r *Reconciler) Trigger() {
	select {
	case r.dirty <- struct{}{}:
	default:
	}
}

// Programmed returns the number of peers the kernel held after the last
// successful pass (0 before the first one).
func (r *Reconciler) Programmed() int { return int(r.programmed.Load()) }

// Run makes a pass at once, then on every Trigger and every Interval, and
// after a failed pass again with bounded exponential backoff. It returns nil
// when ctx ends, and an error only for an unusable config. It deliberately
// leaves the kernel state (device, entries, routes) in place when it
// returns, so that traffic survives a restart of slimd.
func (r *Reconciler) Run(ctx context.Context) error {
	if r.cfg.Dataplane == nil || r.cfg.Desired == nil {
		return errors.New("overlay reconciler: Dataplane and Desired are required")
	}
	maxBackoff := min(retryMax, r.cfg.Interval)
	var backoff time.Duration
	next, triggerable := time.Duration(0), true // first pass at once
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		timer.Reset(next)
		readBack := true
		if triggerable {
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			case <-r.dirty:
				readBack = false
			}
		} else {
			// After a failure, wait out the backoff even if triggered: the
			// retry re-reads everything and so covers the trigger.
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
		}
		// Clear a pending trigger before the pass reads the state, so that
		// only a change landing during the pass triggers another one.
		select {
		case <-r.dirty:
		default:
		}

		err := r.pass(ctx, readBack)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil:
			backoff, next, triggerable = 0, r.cfg.Interval, true
		case errors.Is(err, errNotSynced):
			r.log.Debug("overlay: store not synced, nothing changed")
			next, triggerable = min(notSyncedPoll, r.cfg.Interval), true
		default:
			backoff = min(max(2*backoff, retryMin), maxBackoff)
			next, triggerable = backoff, false
			r.log.Warn("overlay: reconcile failed", "retry_in", backoff, "err", err)
		}
	}
}

// pass makes the kernel equal to the desired state once. It fails if the
// store is not synced (errNotSynced: nothing was changed), if the kernel
// could not be read, or if an operation failed; a peer that the dataplane
// refuses as invalid (ErrInvalidPeer, e.g. overlapping the local subnet) is
// logged and counted as failed, but does not fail the pass: retrying cannot
// help it.
//
// Unless readBack, it takes the kernel to hold what the last successful
// pass left there.
func (r *Reconciler) pass(ctx context.Context, readBack bool) error {
	desired, ok := r.cfg.Desired()
	if !ok {
		return errNotSynced
	}
	valid := make([]Peer, 0, len(desired))
	keys := make(map[peerKey]bool, len(desired))
	for _, p := range desired {
		if err := p.Validate(); err != nil {
			r.log.Warn("overlay: ignoring peer", "peer", p.label(), "err", err)
			continue
		}
		valid = append(valid, p)
		keys[keyOf(p)] = true
	}
	actual := r.applied
	if readBack || actual == nil {
		var err error
		if actual, err = r.cfg.Dataplane.Peers(ctx); err != nil {
			r.applied = nil
			return fmt.Errorf("read peers: %w", err)
		}
	}
	r.applied = nil // known again only after a pass that succeeds
	ensure, remove := Diff(valid, actual)

	var errs []error
	removed, ensured, refused := 0, 0, 0
	var refusedKeys map[peerKey]bool
	for _, p := range remove {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.cfg.Dataplane.RemovePeer(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", p.label(), err))
			continue
		}
		removed++
		if p.Subnet4.IsValid() && p.Subnet4.Bits() < 32 {
			r.log.Info("overlay: peer removed", "peer", p.Subnet4.String())
		} else { // a changed peer's old parts, or leftovers
			r.log.Debug("overlay: stale entries removed", "peer", p.String())
		}
	}
	for _, p := range ensure { // Diff keeps Host
		if err := ctx.Err(); err != nil {
			return err
		}
		err := r.cfg.Dataplane.EnsurePeer(ctx, p)
		switch {
		case errors.Is(err, ErrInvalidPeer):
			refused++
			if refusedKeys == nil {
				refusedKeys = map[peerKey]bool{}
			}
			refusedKeys[keyOf(p)] = true
			r.log.Warn("overlay: peer refused", "host", p.Host, "peer", p.Subnet4.String(), "err", err)
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("ensure %s: %w", p.label(), err))
			continue
		}
		ensured++
		r.log.Info("overlay: peer programmed", "host", p.Host, "peer", p.Subnet4.String(),
			"underlay", p.UnderlayIP.String(), "mac", p.VTEPMAC.String())
	}
	if r.cfg.OnApply != nil {
		r.cfg.OnApply(ensured, removed, len(errs)+refused)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Every desired peer but the refused ones is now in the kernel, and
	// nothing else of ours.
	r.applied = make([]Peer, 0, len(valid))
	for _, p := range valid {
		if k := keyOf(p); keys[k] && !refusedKeys[k] {
			r.applied = append(r.applied, p)
			delete(keys, k) // of duplicates, the first is Diff's
		}
	}
	r.programmed.Store(int64(len(r.applied)))
	r.log.Debug("overlay: reconciled", "peers", len(r.applied), "ensured", ensured, "removed", removed)
	return nil
}
