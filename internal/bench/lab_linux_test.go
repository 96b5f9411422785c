package bench_test

// The benchmark end to end on a real two-host lab: one quick run with tiny
// durations, applications included, then one interrupted run; neither may
// leave containers, processes or files behind.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/bench"
	"github.com/slimnet/slim/internal/cgroupfs"
	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/labtest"
)

// assertClean checks that the benchmark left no container and no process
// in the hosts' exec cgroups (where its host-mode servers and clients ran).
func assertClean(t *testing.T, cfg lab.Config) {
	t.Helper()
	l, err := lab.List(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range l.Containers {
		t.Errorf("container %s left behind", c.Name)
	}
	root, err := cgroupfs.Mount()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"h1", "h2"} {
		b, err := os.ReadFile(filepath.Join(root, "slimlab", h, "host", "cgroup.procs"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			t.Errorf("processes left in %s's host cgroup: %s", h, strings.Fields(s))
		}
	}
	// The applications' files (nginx's configuration, PostgreSQL's data);
	// the lab lock keeps other benchmarks away meanwhile.
	if m, _ := filepath.Glob(filepath.Join(os.TempDir(), "slim-bench-*")); len(m) > 0 {
		t.Errorf("application files left behind: %v", m)
	}
}

func TestBenchOnLab(t *testing.T) {
	l := labtest.New(t, labtest.Hosts(2))
	probe := labtest.Probe(t)
	cfg := bench.Config{
		Lab: l.Config, Reuse: true, Probe: probe, Quick: true, Runs: 1,
		TCPTime: time.Second, RRTime: 300 * time.Millisecond, CRRTime: 300 * time.Millisecond, AppTime: time.Second,
		// crr1's variants: with policies, and through a service.
		Policies: 5, Service: true,
		Progress: labtest.Log(t),
	}
	// Every application test, unless its tools are missing here: the
	// benchmark leaves it out then, and so does the test.
	var missing []string
	for _, tool := range []string{"memcached", "nginx", "wrk", "pgbench", "setpriv", "redis-server", "redis-benchmark"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	apps := len(missing) == 0
	if !apps {
		if os.Getenv("CI") != "" {
			t.Fatalf("application tools missing under CI: %v (scripts/deps.sh installs them)", missing)
		}
		t.Logf("application tests left out: %v not installed", missing)
		cfg.NoApps = true
	}
	// crr1 needs a C compiler; the benchmark leaves it out without one.
	crr1 := false
	for _, cc := range []string{"cc", "gcc", "clang"} {
		if _, err := exec.LookPath(cc); err == nil {
			crr1 = true
		}
	}
	if !crr1 {
		if os.Getenv("CI") != "" {
			t.Fatal("no C compiler under CI (scripts/deps.sh installs gcc and libc6-dev)")
		}
		t.Log("crr1 left out: no C compiler")
	}

	t.Run("quick", func(t *testing.T) {
		rep, err := bench.Run(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		assertClean(t, l.Config)
		// Every test's whole-machine CPU figure has three per-side ones.
		wantFigs, wantGoals := 12+4*3, 9
		if apps {
			wantFigs, wantGoals = wantFigs+20+5*3, wantGoals+24
		}
		if crr1 {
			// 9 figures (one CPU figure; two ratios of the variants), 7
			// goals.
			wantFigs, wantGoals = wantFigs+9+3, wantGoals+7
		}
		if len(rep.Figures) != wantFigs {
			t.Fatalf("%d figures, want %d", len(rep.Figures), wantFigs)
		}
		byID := map[string]bench.Figure{}
		for _, f := range rep.Figures {
			byID[f.ID] = f
		}
		if crr1 {
			checkCRR1(t, rep, byID)
		}
		for _, f := range rep.Figures {
			switch f.ID {
			case bench.FigCRR1HandlerP50, bench.FigCRR1HandlerP99, bench.FigCRR1SlimdCPU, bench.FigCRR1PolicyRatio, bench.FigCRR1ServiceRatio:
				continue // checkCRR1
			}
			if f.Group == bench.GroupCPUSides && (strings.HasSuffix(f.ID, ".slimd") ||
				f.ID == bench.FigCRRSlimdCPU || f.ID == bench.FigNginxCloseSlimd) {
				// Only slim's connections involve slimd: the others
				// see its background work, which may be none.
				for _, m := range bench.Modes {
					if s := f.Results[m]; s.Runs != 1 || s.Median < 0 {
						t.Errorf("%s %s: %+v", f.ID, m, s)
					}
				}
				if f.Test == bench.TestCRR || f.Test == bench.TestCRR1 || f.Test == bench.TestNginxClose {
					if s := f.Results[bench.ModeSlim]; s.Median <= 0 {
						t.Errorf("%s slim: slimd did no work for new connections: %+v", f.ID, s)
					}
				}
				continue
			}
			for _, m := range bench.Modes {
				if s := f.Results[m]; s.Runs != 1 || s.Median <= 0 {
					t.Errorf("%s %s: %+v", f.ID, m, s)
				}
			}
			if _, ok := f.Ratios["slim/host"]; !ok {
				t.Errorf("%s: no slim/host ratio", f.ID)
			}
		}
		if !rep.FastPath.Checked || !rep.FastPath.OnFastPath {
			t.Errorf("fast path check: %+v", rep.FastPath)
		}
		if rep.FastPath.OverlayBytes[bench.ModeOverlay] < 1<<20 {
			t.Errorf("overlay mode moved only %d bytes through the vxlan device", rep.FastPath.OverlayBytes[bench.ModeOverlay])
		}
		if rep.Goals.Total != wantGoals || rep.Goals.Evaluated != wantGoals {
			t.Errorf("goals %+v", rep.Goals)
		}
		var md, js bytes.Buffer
		if err := rep.WriteMarkdown(&md); err != nil {
			t.Fatal(err)
		}
		if err := rep.WriteJSON(&js); err != nil {
			t.Fatal(err)
		}
		t.Logf("\n%s", md.String())
		var back bench.Report
		if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Figures) != len(rep.Figures) {
			t.Errorf("JSON does not read back: %v", err)
		}
	})

	t.Run("interrupted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		c := cfg
		var mu strings.Builder
		// Cancel as soon as the first measurement is reported: Ctrl-C in
		// the middle of a run.
		c.Progress = cancelOn{w: &mu, substr: "run 1/1", cancel: cancel}
		rep, err := bench.Run(ctx, c)
		if !errors.Is(err, context.Canceled) || rep != nil {
			t.Errorf("interrupted run: %v, report %v\n%s", err, rep != nil, mu.String())
		}
		assertClean(t, l.Config)
	})
}

// checkCRR1 checks crr1's figures beyond what every figure must have: the
// broker's handler times exist in slim mode only, slimd works for slim's
// connections, and the percentiles are in order.
func checkCRR1(t *testing.T, rep *bench.Report, byID map[string]bench.Figure) {
	t.Helper()
	if s := rep.Settings.CRR1; s == nil || !s.TWReuse || s.Compiler == "" {
		t.Errorf("crr1 settings %+v", s)
	}
	for _, id := range []string{bench.FigCRR1HandlerP50, bench.FigCRR1HandlerP99} {
		f := byID[id]
		if s := f.Results[bench.ModeSlim]; s.Runs != 1 || s.Median <= 0 || s.Median > 1e6 {
			t.Errorf("%s slim: %+v", id, s)
		}
		for _, m := range []string{bench.ModeHost, bench.ModeOverlay} {
			if s := f.Results[m]; s.Runs != 0 {
				t.Errorf("%s %s: %+v: the broker handles slim's connects only", id, m, s)
			}
		}
		if f.Goal == nil || !f.Goal.Evaluated || f.Goal.Base != "" {
			t.Errorf("%s: goal %+v", id, f.Goal)
		}
	}
	// The variants run in overlay and slim modes, not host's.
	for _, id := range []string{bench.FigCRR1PolicyRatio, bench.FigCRR1ServiceRatio} {
		f := byID[id]
		for _, m := range []string{bench.ModeOverlay, bench.ModeSlim} {
			if s := f.Results[m]; s.Runs != 1 || s.Median <= 0 || s.Median > 10 {
				t.Errorf("%s %s: %+v", id, m, s)
			}
		}
		if s := f.Results[bench.ModeHost]; s.Runs != 0 {
			t.Errorf("%s host: %+v", id, s)
		}
	}
	slimd := byID[bench.FigCRR1SlimdCPU]
	for _, m := range bench.Modes {
		// Host's and overlay's connections do not involve slimd: its
		// background work, which may be none.
		if s := slimd.Results[m]; s.Runs != 1 || s.Median < 0 {
			t.Errorf("%s %s: %+v", slimd.ID, m, s)
		}
	}
	if s := slimd.Results[bench.ModeSlim]; s.Median <= 0 {
		t.Errorf("%s slim: slimd did no work for new connections: %+v", slimd.ID, s)
	}
	for _, p := range [][2]string{{bench.FigCRR1P50, bench.FigCRR1P99}, {bench.FigCRR1HandlerP50, bench.FigCRR1HandlerP99}} {
		for _, m := range bench.Modes {
			if p50, p99 := byID[p[0]].Results[m], byID[p[1]].Results[m]; p99.Median < p50.Median {
				t.Errorf("%s: %s p99 %v below p50 %v", m, p[0], p99.Median, p50.Median)
			}
		}
	}
	for _, w := range rep.Warnings {
		if strings.Contains(w, "crr1") && !strings.Contains(w, "linked dynamically") {
			t.Errorf("warning: %s", w)
		}
	}
}

// cancelOn cancels when a line containing substr is written.
type cancelOn struct {
	w      *strings.Builder
	substr string
	cancel context.CancelFunc
}

func (c cancelOn) Write(p []byte) (int, error) {
	c.w.Write(p)
	if strings.Contains(string(p), c.substr) {
		c.cancel()
	}
	return len(p), nil
}

func TestLockPathIsLabtests(t *testing.T) {
	if bench.LockPath != labtest.LockPath {
		t.Errorf("bench.LockPath %s, labtest.LockPath %s: they must be one lock", bench.LockPath, labtest.LockPath)
	}
}
