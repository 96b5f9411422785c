package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/slimnet/slim/internal/bench"
	"github.com/slimnet/slim/internal/lab"
)

// benchProbe is the slimprobe binary's name, looked up next to slimctl and
// then in PATH.
const benchProbe = "slimprobe"

// newBenchCmd is `slimctl bench`, a thin wrapper of package bench.
func newBenchCmd(g *globals) *cobra.Command {
	lf := &labFlags{}
	var (
		cfg       bench.Config
		format    string
		apps      bool
		noApps    bool
		tests     []string
		chartsDir string
		from      string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure host, overlay and slim networking side by side on the lab",
		Long: `Measure host networking, the plain VXLAN overlay and Slim's fast path side by
side on a 2-host lab: TCP throughput (iperf3, 1 and 4 streams), request/
response latency (slimprobe rr), connection setup (slimprobe crr, 4 clients
at once; and crr1, a C client making one connection at a time as netperf's
TCP_CRR does, with the broker's connect handler time in slim mode), the
whole machine's CPU time per GB and per transaction (/proc/stat), and
applications as in the Slim paper: memcached (slimprobe's load generator),
nginx with wrk (keep-alive, and one request per connection), PostgreSQL with
pgbench -S, and Redis with redis-benchmark. Each run measures every test in
the three modes one after another (host, overlay, slim), so that all modes
see the same machine state; every figure is the median of the runs with min
and max, and its ratios to host and to overlay. The goals for slim
(throughput >= 0.95x host, latency and CPU per operation <= 1.05x host,
memcached and Redis throughput >= 1.3x overlay, connection setup rate
>= 0.8x overlay; for crr1: rate >= 1.0x overlay, connect-to-close p50
<= 1.1x overlay, the client host's slimd CPU <= 15 us per connection, the
broker's connect handler p50 <= 15 us and p99 <= 100 us; with --policies
100, crr1's rate with the policies >= 0.95x without) are marked met or not
met.

The lab: by default the benchmark builds its own at --state-dir and tears it
down at the end, also on failure and on Ctrl-C; it refuses to start when a
lab exists. --keep leaves the lab it built up. --reuse benchmarks the running
lab at --state-dir (its hosts h1 and h2) and leaves it up. Either way the
benchmark's containers (bench-*), servers and their temporary files are
removed at the end. It holds the machine-wide lab lock (` + bench.LockPath + `)
meanwhile, as lab tests do.

Needs root, iperf3, and slimprobe built static next to slimctl or in PATH
(or --probe):
  CGO_ENABLED=0 go build -o <dir of slimctl>/ ./cmd/slimprobe
crr1 compiles its C client at run time with the machine's C compiler ($CC,
cc, gcc or clang; -static, or dynamic if static linking fails): Debian's gcc
and libc6-dev. It sets net.ipv4.tcp_tw_reuse=1 in the client namespaces
(the client host's and the client containers') and leaves it set: its
client closes first, so TIME_WAIT piles up on the client's side. The
applications need Debian's memcached, nginx-light, wrk, postgresql,
redis-server and redis-tools (scripts/deps.sh installs them all). A test
whose tools are missing is left out with a warning, unless --tests names
it. --no-apps leaves the applications out; --tests runs only the tests
named.

The Markdown table goes to stdout (-o json or --format json: the report as
JSON, every sample included; fields are added, never renamed); one progress
line per step goes to stderr, unless -q. --charts DIR also draws one PNG bar
chart per figure group (throughput, latency, setup, cpu, apps). --from FILE
renders a report saved with -o json again (table, JSON or charts) without
running anything. The full run takes about 12 minutes on 2 cores (about 8
with --no-apps), --quick (3 runs, 1-2 s tests) a little over 2.

Exit codes: 0 ok, 1 failed (also when some measurements failed: the report
is printed, with warnings), 2 usage.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := g.output
			if cmd.Flags().Changed("format") {
				if cmd.Flags().Changed("output") && g.output != format && !(g.output == "table" && format == "markdown") {
					return &usageError{fmt.Errorf("--format %s and -o %s disagree", format, g.output)}
				}
				out = format
			}
			switch out {
			case "table", "markdown", "md":
				out = "markdown"
			case "json":
			default:
				return &usageError{fmt.Errorf("unknown output format %q: want markdown (table) or json", out)}
			}
			if from != "" {
				return renderSaved(g, from, out, chartsDir)
			}
			cfg.NoApps = noApps || !apps
			if len(tests) > 0 {
				cfg.Tests = tests
			}
			lc, err := lf.config(g)
			if err != nil {
				return err
			}
			cfg.Lab = lc
			if cfg.Probe == "" {
				if cfg.Probe, err = findProbe(lc); err != nil {
					return err
				}
			}
			if !g.quiet {
				cfg.Progress = g.stderr
			}
			ctx := cmd.Context()
			unlock, err := bench.Lock(ctx, func() {
				if !g.quiet {
					fmt.Fprintf(g.stderr, "waiting for the lab lock %s (a lab test or another benchmark holds it)\n", bench.LockPath)
				}
			})
			if err != nil {
				return err
			}
			defer unlock()
			rep, err := bench.Run(ctx, cfg)
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				err = fmt.Errorf("interrupted: %w", err)
			}
			if rep != nil {
				err = errors.Join(err, writeReport(g, rep, out, chartsDir))
			}
			return err
		},
	}
	pf := cmd.Flags()
	pf.StringVar(&lf.stateDir, "state-dir", lab.DefaultStateDir, "directory of the lab's state, logs and etcd data")
	pf.StringVar(&lf.binDir, "bin-dir", "", "directory holding slimd and slim-cni (default: slimctl's own)")
	pf.StringVar(&format, "format", "markdown", "output format: markdown or json (same as -o table|json)")
	pf.IntVar(&cfg.Runs, "runs", 0, fmt.Sprintf("runs; every figure is their median (default %d, --quick %d)", bench.DefaultRuns, bench.QuickRuns))
	pf.BoolVar(&cfg.Quick, "quick", false, fmt.Sprintf("%d runs of %v-%v tests instead of %d of %v-%v", bench.QuickRuns, bench.QuickAppTime,
		bench.QuickTCPTime, bench.DefaultRuns, bench.DefaultAppTime, bench.DefaultTCPTime))
	pf.BoolVar(&cfg.Keep, "keep", false, "leave the lab the benchmark built up afterwards")
	pf.BoolVar(&cfg.Reuse, "reuse", false, "benchmark the running lab at --state-dir instead of building one; leave it up")
	pf.StringVar(&cfg.Probe, "probe", "", "slimprobe binary (default: next to slimctl, then PATH)")
	pf.DurationVar(&cfg.TCPTime, "tcp-time", 0, fmt.Sprintf("each iperf3 test's duration, whole seconds (default %v)", bench.DefaultTCPTime))
	pf.DurationVar(&cfg.RRTime, "rr-time", 0, fmt.Sprintf("each rr test's duration (default %v)", bench.DefaultRRTime))
	pf.DurationVar(&cfg.CRRTime, "crr-time", 0, fmt.Sprintf("each crr and crr1 test's duration (default %v)", bench.DefaultCRRTime))
	pf.IntVar(&cfg.RRSize, "rr-size", 0, fmt.Sprintf("rr message size in bytes (default %d)", bench.DefaultRRSize))
	pf.IntVar(&cfg.CRRWorkers, "crr-workers", 0, fmt.Sprintf("crr clients at once (default %d)", bench.DefaultCRRWorkers))
	pf.BoolVar(&cfg.Service, "service", false, "also run crr1 through a ClusterIP service fronting its server, in the overlay and slim modes, and report the rate through it over direct (goal: slim >= 0.95)")
	pf.IntVar(&cfg.Policies, "policies", 0, "also run crr1 with this many network policies selecting its servers, in the overlay and slim modes, and report the rate with them over without (goal: slim >= 0.95 with 100)")
	pf.DurationVar(&cfg.AppTime, "app-time", 0, fmt.Sprintf("each application test's duration, whole seconds (default %v, --quick %v)",
		bench.DefaultAppTime, bench.QuickAppTime))
	pf.BoolVar(&apps, "apps", true, "run the application tests (memcached, nginx, PostgreSQL, Redis)")
	pf.BoolVar(&noApps, "no-apps", false, "leave out the application tests: same as --apps=false")
	pf.StringSliceVar(&tests, "tests", nil, "run only these tests, comma-separated: "+strings.Join(bench.Tests, ","))
	pf.StringVar(&chartsDir, "charts", "", "also draw the figures as PNG bar charts into this directory, one per group")
	pf.StringVar(&from, "from", "", "render a report saved with -o json (table, JSON, --charts) instead of running the benchmark")
	// A reused lab is always kept; --tests names the tests itself; --from
	// runs nothing.
	cmd.MarkFlagsMutuallyExclusive("keep", "reuse")
	cmd.MarkFlagsMutuallyExclusive("apps", "no-apps")
	cmd.MarkFlagsMutuallyExclusive("tests", "apps")
	cmd.MarkFlagsMutuallyExclusive("tests", "no-apps")
	for _, f := range []string{"keep", "reuse", "quick", "runs", "tests", "probe", "apps", "no-apps", "policies", "service"} {
		cmd.MarkFlagsMutuallyExclusive("from", f)
	}
	cmd.AddCommand(newBenchControlPlaneCmd(g, lf), newBenchCPWatcherCmd())
	return cmd
}

// writeReport prints rep in format out and draws its charts into dir.
func writeReport(g *globals, rep *bench.Report, out, dir string) error {
	var err error
	if out == "json" {
		err = rep.WriteJSON(g.stdout)
	} else {
		err = rep.WriteMarkdown(g.stdout)
	}
	if dir != "" {
		files, cerr := bench.WriteCharts(rep, dir)
		err = errors.Join(err, cerr)
		if !g.quiet {
			for _, f := range files {
				fmt.Fprintf(g.stderr, "chart: %s\n", f)
			}
		}
	}
	return err
}

// renderSaved renders a report that -o json saved.
func renderSaved(g *globals, path, out, chartsDir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rep, err := bench.ReadJSON(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return writeReport(g, rep, out, chartsDir)
}

// findProbe looks for slimprobe next to slimctl (or in --bin-dir), then
// in PATH.
func findProbe(lc lab.Config) (string, error) {
	var dirs []string
	if lc.BinDir != "" {
		dirs = append(dirs, lc.BinDir)
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	for _, d := range dirs {
		p := filepath.Join(d, benchProbe)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return filepath.Abs(p)
		}
	}
	if p, err := exec.LookPath(benchProbe); err == nil {
		return filepath.Abs(p)
	}
	return "", fmt.Errorf("%s not found next to slimctl or in PATH: build it with CGO_ENABLED=0 go build -o <dir>/ ./cmd/slimprobe, or pass --probe", benchProbe)
}
