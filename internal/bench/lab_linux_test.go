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

// buildProbe builds test/slimprobe as a static binary (CGO_ENABLED=0).
func buildProbe(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "slimprobe")
	cmd := exec.Command("go", "build", "-o", p, "github.com/slimnet/slim/test/slimprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build slimprobe: %v\n%s", err, out)
	}
	return p
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

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
	probe := buildProbe(t)
	cfg := bench.Config{
		Lab: l.Config, Reuse: true, Probe: probe, Quick: true, Runs: 1,
		TCPTime: time.Second, RRTime: 300 * time.Millisecond, CRRTime: 300 * time.Millisecond, AppTime: time.Second,
		Progress: logWriter{t},
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

	t.Run("quick", func(t *testing.T) {
		rep, err := bench.Run(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		assertClean(t, l.Config)
		// Every test's whole-machine CPU figure has three per-side ones.
		wantFigs, wantGoals := 12+4*3, 9
		if apps {
			wantFigs, wantGoals = 32+9*3, 33
		}
		if len(rep.Figures) != wantFigs {
			t.Fatalf("%d figures, want %d", len(rep.Figures), wantFigs)
		}
		for _, f := range rep.Figures {
			if f.Group == bench.GroupCPUSides && (strings.HasSuffix(f.ID, ".slimd") ||
				f.ID == bench.FigCRRSlimdCPU || f.ID == bench.FigNginxCloseSlimd) {
				// Only slim's connections involve slimd: the others
				// see its background work, which may be none.
				for _, m := range bench.Modes {
					if s := f.Results[m]; s.Runs != 1 || s.Median < 0 {
						t.Errorf("%s %s: %+v", f.ID, m, s)
					}
				}
				if f.Test == bench.TestCRR || f.Test == bench.TestNginxClose {
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
