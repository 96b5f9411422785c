package overlay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/slimnet/slim/internal/testenv"
)

// desiredState is a store stand-in for ReconcilerConfig.Desired.
type desiredState struct {
	mu     sync.Mutex
	peers  []Peer
	synced bool
}

func (d *desiredState) set(synced bool, peers ...Peer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.synced, d.peers = synced, peers
}

func (d *desiredState) get() ([]Peer, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Peer(nil), d.peers...), d.synced
}

// Hosts for the reconciler tests.
var (
	hostA  = peer("a", "10.244.1.0/24", "192.168.1.1", "02:53:c0:a8:01:01")
	hostA6 = peer("a", "10.244.1.0/24", "192.168.1.1", "02:53:c0:a8:01:01", "fd5a:11:0:1::/64")
	hostB  = peer("b", "10.244.2.0/24", "192.168.1.2", "02:53:c0:a8:01:02")
	hostB6 = peer("b", "10.244.2.0/24", "192.168.1.2", "02:53:c0:a8:01:02", "fd5a:11:0:2::/64")
	hostC  = peer("c", "10.244.3.0/24", "192.168.1.3", "02:53:c0:a8:01:03")
	hostD  = peer("d", "10.244.4.0/24", "192.168.1.4", "02:53:c0:a8:01:04")
)

func TestReconcilerGolden(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		start := time.Now()
		f.now = func() string { return fmt.Sprintf("t=%-6v", time.Since(start)) }
		var store desiredState
		r := NewReconciler(ReconcilerConfig{
			Dataplane: f,
			Desired:   store.get,
			Interval:  30 * time.Second,
			Log:       testenv.Logger(t),
			OnApply: func(ensured, removed, failed int) {
				f.note("applied: ensured=%d removed=%d failed=%d", ensured, removed, failed)
			},
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()

		first := true
		step := func(format string, args ...any) {
			synctest.Wait()
			if !first {
				f.note("")
			}
			first = false
			f.note(format, args...)
		}
		programmed := func() { synctest.Wait(); f.note("programmed=%d", r.Programmed()) }

		step("start: store not synced, 5s pass; nothing may change")
		time.Sleep(5 * time.Second)
		programmed()

		step("store synced with b and c")
		store.set(true, hostB, hostC)
		r.Trigger()
		programmed()

		step("trigger without change: nothing read, nothing written")
		r.Trigger()
		programmed()

		step("b gets IPv6; c gets a new VTEP MAC")
		cNew := hostC
		cNew.VTEPMAC = mac("02:53:c0:a8:01:33")
		store.set(true, hostB6, cNew)
		r.Trigger()
		programmed()

		step("c leaves; three triggers coalesce into one pass")
		store.set(true, hostB6)
		r.Trigger()
		r.Trigger()
		r.Trigger()
		programmed()

		step("route of b deleted by hand, no trigger: the resync timer repairs it")
		f.drift("route", hostB6.Subnet4)
		time.Sleep(30 * time.Second)
		programmed()

		step("d joins; its EnsurePeer fails twice; a trigger during the backoff waits")
		fails := 0
		f.mu.Lock()
		f.fail = func(op string, p Peer) error {
			if op == "ensure" && p.Host == "d" && fails < 2 {
				fails++
				return errors.New("EBUSY (injected)")
			}
			return nil
		}
		f.mu.Unlock()
		store.set(true, hostB6, hostD)
		r.Trigger()
		synctest.Wait()
		r.Trigger() // during the first backoff
		time.Sleep(2 * time.Second)
		programmed()

		step("store loses sync (an etcd outage): nothing may change, not even on the timer")
		store.set(false)
		r.Trigger()
		time.Sleep(61 * time.Second)
		programmed()

		step("store back with b only")
		store.set(true, hostB6)
		r.Trigger()
		programmed()

		step("shutdown")
		cancel()
		err := <-done
		f.note("Run returned %v; kernel keeps %d peers", err, len(f.state()))

		testenv.Golden(t, "reconciler.golden", []byte(f.log()))
	})
}

// transitionStates are desired states whose transitions exercise every
// kind of change: add, remove, IPv6 on and off, MAC change, underlay change,
// a subnet re-leased with the same MAC, MACs swapped between hosts, an IPv6
// subnet moving to another host.
func transitionStates() [][]Peer {
	with := func(p Peer, f func(*Peer)) Peer { f(&p); return p }
	return [][]Peer{
		{},
		{hostA, hostB},
		{hostA6, hostB, hostC},
		{with(hostA6, func(p *Peer) { p.VTEPMAC = mac("02:53:c0:a8:01:11") }), hostB6},
		{with(hostA, func(p *Peer) { p.Subnet4 = pfx("10.244.9.0/24") }), hostC},
		{with(hostA, func(p *Peer) { p.VTEPMAC = hostB.VTEPMAC }), with(hostB, func(p *Peer) { p.VTEPMAC = hostA.VTEPMAC })},
		{hostA, with(hostB, func(p *Peer) { p.Subnet6 = hostA6.Subnet6 }), hostD},
		{hostA6, hostB6, with(hostC, func(p *Peer) { p.UnderlayIP = addr("192.168.7.3") }), hostD},
	}
}

// checkConverged checks that the fake kernel holds exactly desired, that
// another diff would do nothing, and that Programmed agrees.
func checkConverged(t *testing.T, r *Reconciler, f *fakeDataplane, desired []Peer) {
	t.Helper()
	got := f.state()
	if !samePeers(got, desired) {
		t.Fatalf("kernel holds%s\nwant%s", peersString(got), peersString(desired))
	}
	if ensure, remove := Diff(desired, got); len(ensure)+len(remove) > 0 {
		t.Fatalf("not converged: ensure%s\nremove%s", peersString(ensure), peersString(remove))
	}
	if r.Programmed() != len(desired) {
		t.Fatalf("Programmed() = %d, want %d", r.Programmed(), len(desired))
	}
}

// TestReconcilerTransitions walks every ordered pair of states: one pass
// must always reach the new state, whether it reads the kernel back or
// trusts what the pass before left there (a triggered pass), and the
// latter reads nothing.
func TestReconcilerTransitions(t *testing.T) {
	states := transitionStates()
	for i, from := range states {
		for j, to := range states {
			for _, readBack := range []bool{true, false} {
				t.Run(fmt.Sprintf("%d->%d,readBack=%v", i, j, readBack), func(t *testing.T) {
					f := newFake()
					reads := 0
					f.fail = func(op string, _ Peer) error {
						if op == "peers" {
							reads++
						}
						return nil
					}
					var store desiredState
					r := NewReconciler(ReconcilerConfig{Dataplane: f, Desired: store.get})
					store.set(true, from...)
					if err := r.pass(t.Context(), readBack); err != nil {
						t.Fatal(err)
					}
					checkConverged(t, r, f, from)
					store.set(true, to...)
					if err := r.pass(t.Context(), readBack); err != nil {
						t.Fatal(err)
					}
					checkConverged(t, r, f, to)
					if want := map[bool]int{true: 2, false: 1}[readBack]; reads != want {
						t.Errorf("the kernel was read %d times, want %d", reads, want)
					}
				})
			}
		}
	}
}

// TestReconcilerRandomWalk walks the states in random order, with random
// drift (objects deleted by hand) before some passes.
func TestReconcilerRandomWalk(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	states := transitionStates()
	f := newFake()
	var store desiredState
	r := NewReconciler(ReconcilerConfig{Dataplane: f, Desired: store.get})
	for i := range 300 {
		s := states[rng.IntN(len(states))]
		if rng.IntN(3) == 0 {
			driftRandomly(f, rng)
		}
		store.set(true, s...)
		if err := r.pass(t.Context(), true); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		checkConverged(t, r, f, s)
	}
}

// driftRandomly deletes one random kernel object, or adds a stray one.
func driftRandomly(f *fakeDataplane, rng *rand.Rand) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch rng.IntN(4) {
	case 0:
		for k := range f.routes {
			delete(f.routes, k)
			return
		}
	case 1:
		for k := range f.neigh {
			delete(f.neigh, k)
			return
		}
	case 2:
		for k := range f.fdb {
			delete(f.fdb, k)
			return
		}
	case 3:
		f.neigh[addr("10.244.99.0")] = mac("02:53:00:00:00:99")
		f.fdb[string(mac("02:53:00:00:00:99"))] = addr("192.168.1.99")
	}
}

func TestReconcilerNotSyncedChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		seedFake(f, []Peer{hostA6, hostB})
		before := f.state()
		var store desiredState // never synced; it would want nothing
		applied := 0
		r := NewReconciler(ReconcilerConfig{Dataplane: f, Desired: store.get, Interval: 10 * time.Second,
			OnApply: func(int, int, int) { applied++ }})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()
		for range 20 {
			r.Trigger()
			time.Sleep(15 * time.Second)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if ops := f.ops(); len(ops) > 0 {
			t.Errorf("operations while not synced: %q", ops)
		}
		if !samePeers(f.state(), before) {
			t.Errorf("kernel changed:%s", peersString(f.state()))
		}
		if applied != 0 || r.Programmed() != 0 {
			t.Errorf("applied %d times, Programmed %d", applied, r.Programmed())
		}
	})
}

func TestReconcilerRetryBackoff(t *testing.T) {
	for _, failOp := range []string{"ensure", "peers"} {
		t.Run(failOp, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake()
				start := time.Now()
				var attempts []time.Duration
				f.fail = func(op string, p Peer) error {
					if op != failOp || op == "ensure" && p.Host != "a" {
						return nil
					}
					attempts = append(attempts, time.Since(start))
					if len(attempts) <= 7 {
						return errors.New("injected")
					}
					return nil
				}
				var store desiredState
				store.set(true, hostA, hostB)
				failed := 0
				r := NewReconciler(ReconcilerConfig{Dataplane: f, Desired: store.get, Interval: 2 * time.Second,
					OnApply: func(_, _, n int) { failed += n }})
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error)
				go func() { done <- r.Run(ctx) }()
				time.Sleep(100 * time.Millisecond)
				synctest.Wait()
				for range 50 { // triggers do not cut the backoff short
					r.Trigger()
				}
				time.Sleep(20 * time.Second)
				synctest.Wait()
				cancel()
				<-done

				// Backoff doubles from 200ms and is capped by Interval (2s).
				ms := time.Millisecond
				want := []time.Duration{0, 200 * ms, 600 * ms, 1400 * ms, 3000 * ms, 5000 * ms, 7000 * ms, 9000 * ms}
				if len(attempts) < len(want) {
					t.Fatalf("attempts at %v, want %v", attempts, want)
				}
				for i := range want {
					if attempts[i] != want[i] {
						t.Fatalf("attempts at %v, want %v", attempts, want)
					}
				}
				if r.Programmed() != 2 {
					t.Errorf("Programmed() = %d after recovery, want 2", r.Programmed())
				}
				if !samePeers(f.state(), []Peer{hostA, hostB}) {
					t.Errorf("kernel holds%s", peersString(f.state()))
				}
				if failOp == "ensure" && failed == 0 {
					t.Error("OnApply never reported failures")
				}
			})
		})
	}
}

func TestReconcilerInvalidPeersIgnored(t *testing.T) {
	f := newFake()
	var store desiredState
	bad := hostC
	bad.UnderlayIP = addr("fd00::3")
	store.set(true, hostA, bad)
	r := NewReconciler(ReconcilerConfig{Dataplane: f, Desired: store.get})
	if err := r.pass(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	checkConverged(t, r, f, []Peer{hostA})
}

func TestReconcilerRunNeedsConfig(t *testing.T) {
	err := NewReconciler(ReconcilerConfig{}).Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("Run with empty config = %v", err)
	}
}

// TestReconcilerRefusedPeer: a peer the dataplane refuses as invalid is
// counted as failed but does not make the pass fail (no retry loop).
func TestReconcilerRefusedPeer(t *testing.T) {
	f := newFake()
	f.fail = func(op string, p Peer) error {
		if op == "ensure" && p.Host == "c" {
			return fmt.Errorf("%w: overlaps the local pod subnet", ErrInvalidPeer)
		}
		return nil
	}
	var store desiredState
	store.set(true, hostA, hostC)
	var failed int
	r := NewReconciler(ReconcilerConfig{Dataplane: f, Desired: store.get, OnApply: func(_, _, n int) { failed = n }})
	if err := r.pass(t.Context(), true); err != nil {
		t.Fatalf("pass = %v", err)
	}
	if failed != 1 || r.Programmed() != 1 {
		t.Errorf("failed %d, Programmed %d; want 1, 1", failed, r.Programmed())
	}
}
