package overlay

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/poll"
	"github.com/slimnet/slim/internal/testenv"
	"github.com/vishvananda/netlink"
)

// TestReconcilerNetlink runs the reconciler on the real dataplane: it
// programs the desired peers, repairs a route deleted by hand at the next
// resync (a trigger trusts what the last pass left), and leaves everything
// in place when it stops.
func TestReconcilerNetlink(t *testing.T) {
	tn, dev, dp := newTestDataplane(t)
	var store desiredState
	store.set(true, remoteB6, remoteC)
	r := NewReconciler(ReconcilerConfig{
		Dataplane: dp,
		Desired:   store.get,
		Interval:  2 * time.Second,
		Log:       testenv.Logger(t),
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stop := sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() { _ = stop() })

	converged := func() error {
		got, err := dp.Peers(t.Context())
		if err != nil {
			return err
		}
		if !samePeers(got, []Peer{remoteB6, remoteC}) {
			return fmt.Errorf("kernel holds%s", peersString(got))
		}
		if r.Programmed() != 2 {
			return fmt.Errorf("Programmed() = %d", r.Programmed())
		}
		return nil
	}
	poll.Until(t, 5*time.Second, converged)

	must(t, tn.h.RouteDel(&netlink.Route{LinkIndex: dev.Index, Dst: ipNet(remoteC.Subnet4)}))
	if tn.hasRoute(t, dev.Index, remoteC.Subnet4) {
		t.Fatal("route still there")
	}
	poll.Until(t, 5*time.Second, func() error {
		if !tn.hasRoute(t, dev.Index, remoteC.Subnet4) {
			return fmt.Errorf("route %s not repaired", remoteC.Subnet4)
		}
		return converged()
	})

	store.set(true, remoteB6)
	r.Trigger()
	poll.Until(t, 5*time.Second, func() error {
		got, err := dp.Peers(t.Context())
		if err != nil {
			return err
		}
		if !samePeers(got, []Peer{remoteB6}) {
			return fmt.Errorf("kernel holds%s", peersString(got))
		}
		return nil
	})

	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	checkPeers(t, dp, remoteB6) // left in place
}
