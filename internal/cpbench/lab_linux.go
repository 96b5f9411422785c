package cpbench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bench"
	"github.com/slimnet/slim/internal/cgroupfs"
	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

// RunOnLab adds n simulated hosts to a running lab whose store is an
// external etcd cluster, and measures the lab's real slimds (h1, h2):
// memory, convergence, CPU under churn, and a restart. The lab must have
// room for them (slimctl lab up --etcd-members 3 --cluster-cidr
// 10.128.0.0/9 --port-block-size 64); lab down removes everything.
func RunOnLab(ctx context.Context, lc lab.Config, cfg Config, n int) (LabResult, error) {
	r := LabResult{Hosts: n, RSSBefore: map[string]int64{}, RSSAfter: map[string]int64{}, RSSPeak: map[string]int64{}}
	ccfg, err := lab.EtcdClientConfig(lc)
	if err != nil {
		return r, err
	}
	hostsOfLab := []string{"h1", "h2"}
	read := func(field string, into map[string]int64, hosts ...string) error {
		for _, h := range hosts {
			pid, ok := lab.SlimdPID(lc, h)
			if !ok {
				return fmt.Errorf("slimd on %s is not running", h)
			}
			b, err := procStatus(pid, field)
			if err != nil {
				return err
			}
			into[h] = b
		}
		return nil
	}
	rss := func(into map[string]int64) error { return read("VmRSS", into, hostsOfLab...) }
	if err := rss(r.RSSBefore); err != nil {
		return r, err
	}
	cfg.step("lab: adding %d simulated hosts of %d endpoints", n, cfg.EndpointsPerHost)
	t0 := time.Now()
	hosts, clients, err := seed(ctx, cfg, func() (*clientv3.Client, error) { return clientv3.New(ccfg) }, store.DefaultPrefix, n)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	if err != nil {
		return r, err
	}
	r.SeedSeconds = time.Since(t0).Seconds()
	for _, h := range hosts {
		r.Endpoints += len(h.eps)
	}
	t1 := time.Now()
	if err := converged(ctx, lc, hostsOfLab, n+len(hostsOfLab), 10*time.Minute); err != nil {
		return r, err
	}
	r.ConvergeSeconds = time.Since(t1).Seconds()
	time.Sleep(5 * time.Second) // let a pass after the last change finish
	if err := rss(r.RSSAfter); err != nil {
		return r, err
	}
	if r.HeapLive, err = liveHeap(ctx, "h1"); err != nil {
		return r, err
	}
	fp, err := api.NewClient(lab.SocketPath(lc, "h1")).FastPath(ctx)
	if err != nil {
		return r, err
	}
	r.BPFPortBlocks = fp.BPFPortBlocks
	cfg.step("lab: converged %.1f s after the seed (%.0f s); h1's slimd %d MB (%d MB live heap), %d port blocks in BPF",
		r.ConvergeSeconds, r.SeedSeconds, r.RSSAfter["h1"]>>20, r.HeapLive>>20, r.BPFPortBlocks)

	c0, err := slimdCPU("h1")
	if err != nil {
		return r, err
	}
	writes, took, err := runChurn(ctx, cfg, hosts, r.Endpoints)
	if err != nil {
		return r, err
	}
	c1, err := slimdCPU("h1")
	if err != nil {
		return r, err
	}
	if err := read("VmHWM", r.RSSPeak, hostsOfLab...); err != nil {
		return r, err
	}
	r.ChurnWrites = len(writes)
	r.CPUShare = (c1 - c0).Seconds() / took.Seconds()
	cfg.step("lab: %d churn writes in %.0f s, h1's slimd used %.0f%% of a CPU", len(writes), took.Seconds(), 100*r.CPUShare)

	t2 := time.Now()
	if err := lab.StopSlimd(ctx, lc, "h2", unix.SIGTERM); err != nil {
		return r, err
	}
	if err := lab.UpAgain(ctx, lc); err != nil {
		return r, err
	}
	if err := converged(ctx, lc, []string{"h2"}, n+len(hostsOfLab), 10*time.Minute); err != nil {
		return r, err
	}
	r.RestartSeconds = time.Since(t2).Seconds()
	restarted := map[string]int64{}
	if err := read("VmHWM", restarted, "h2"); err != nil {
		return r, err
	}
	r.RSSPeak["h2 restarted"] = restarted["h2"]
	cfg.step("lab: h2's slimd restarted and converged in %.1f s; resident at most %d MB (h1 %d MB, h2 before %d MB)",
		r.RestartSeconds, restarted["h2"]>>20, r.RSSPeak["h1"]>>20, r.RSSPeak["h2"]>>20)
	return r, nil
}

// converged waits until every host's slimd knows want hosts and has
// programmed want-1 overlay peers.
func converged(ctx context.Context, lc lab.Config, hosts []string, want int, timeout time.Duration) error {
	return lab.WaitHosts(ctx, lc, hosts, timeout, func(st api.Status) bool {
		return st.StoreSynced && st.KnownHosts == want && st.Peers == want-1
	})
}

// slimdCPU is the CPU time of host's slimd cgroup (its keeper, which
// only holds fds, has a cgroup of its own).
func slimdCPU(host string) (time.Duration, error) {
	root, err := cgroupfs.Mount()
	if err != nil {
		return 0, err
	}
	return bench.CgroupsCPU([]string{lab.SlimdCgroup(root, host)})
}

// liveHeap is the Go heap a lab slimd holds right after a garbage
// collection: its profile endpoint (the lab runs slimd with --pprof)
// collects before answering, and its metrics then count what survived.
func liveHeap(ctx context.Context, host string) (int64, error) {
	c := lab.MetricsClient(host)
	get := func(path string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+lab.MetricsAddr+path, nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s on %s: %s", path, host, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	if _, err := get("/debug/pprof/heap?gc=1"); err != nil {
		return 0, err
	}
	m, err := get("/metrics")
	if err != nil {
		return 0, err
	}
	v, err := bench.SumCounter(bytes.NewReader(m), "go_memstats_heap_alloc_bytes")
	return int64(v), err
}
