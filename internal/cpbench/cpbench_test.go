package cpbench_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/cpbench"
	"github.com/slimnet/slim/internal/lab/labtest"
)

// A small cluster end to end: real etcd members, simulated hosts through
// the store's transactions, watcher processes running slimd's caches.
// Every figure must come out, every write must reach every watcher.
func TestControlPlaneSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster and watcher processes")
	}
	bin := labtest.Build(t, "slimd", "slimctl")
	cfg := cpbench.Config{
		Slimd:            filepath.Join(bin, "slimd"),
		Watcher:          []string{filepath.Join(bin, "slimctl"), "bench", "control-plane-watcher"},
		Hosts:            []int{6},
		EndpointsPerHost: 5,
		ListenersPerHost: 2,
		Watchers:         2,
		Churn:            10, // 10x the endpoints per minute: 5 writes a second
		Duration:         3 * time.Second,
		Dir:              t.TempDir(),
		Progress:         labtest.Log(t),
	}
	rs, err := cpbench.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	if r.Hosts != 6 || r.Endpoints != 30 || r.Listeners != 12 {
		t.Errorf("cluster %+v", r)
	}
	if r.Writes < 5 || r.Samples != r.Writes*2 {
		t.Errorf("%d writes, %d samples: want every write seen by both watchers", r.Writes, r.Samples)
	}
	if r.ColdStartSeconds <= 0 || r.ColdStartBytes <= 0 || r.RSSBytes <= 0 || r.HeapBytes == 0 {
		t.Errorf("cold start %+v", r)
	}
	if r.PropagationP50 <= 0 || r.PropagationP99 < r.PropagationP50 || r.PropagationP99 > 5 {
		t.Errorf("propagation p50 %v p99 %v", r.PropagationP50, r.PropagationP99)
	}
	if r.DBBytes <= 0 || r.RequestsPerHost <= 0 {
		t.Errorf("etcd %d bytes, %v requests/s per host", r.DBBytes, r.RequestsPerHost)
	}
	if !r.EtcdSurvived || r.MassRestartSeconds <= 0 || r.MassRestartSyncSeconds <= 0 {
		t.Errorf("mass restart %+v", r)
	}
}
