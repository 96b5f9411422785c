package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

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
		cfg    bench.Config
		format string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure host, overlay and slim networking side by side on the lab",
		Long: `Measure host networking, the plain VXLAN overlay and Slim's fast path side by
side on a 2-host lab: TCP throughput (iperf3, 1 and 4 streams), request/
response latency (slimprobe rr), connection setup (slimprobe crr), and the
whole machine's CPU time per GB and per transaction (/proc/stat). Each run
measures every test in the three modes one after another (host, overlay,
slim), so that all modes see the same machine state; every figure is the
median of the runs with min and max, and its ratios to host and to overlay.
The goals for slim (throughput >= 0.95x host, latency and CPU per operation
<= 1.05x host, connection setup rate >= 0.8x overlay) are marked met or not
met.

The lab: by default the benchmark builds its own at --state-dir and tears it
down at the end, also on failure and on Ctrl-C; it refuses to start when a
lab exists. --keep leaves the lab it built up. --reuse benchmarks the running
lab at --state-dir (its hosts h1 and h2) and leaves it up. Either way the
benchmark's containers (bench-*) and servers are removed at the end. It holds
the machine-wide lab lock (` + bench.LockPath + `) meanwhile, as lab tests do.

Needs root, iperf3 (Debian's), and slimprobe built static next to slimctl or
in PATH (or --probe):
  CGO_ENABLED=0 go build -o <dir of slimctl>/ ./test/slimprobe

The Markdown table goes to stdout (-o json or --format json: the report as
JSON, every sample included; fields are added, never renamed); one progress
line per step goes to stderr, unless -q. The full run takes about 7 minutes
on 2 cores, --quick (3 runs, 2 s tests) under 2.

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
			if cfg.Keep && cfg.Reuse {
				return &usageError{errors.New("--keep and --reuse: a reused lab is always kept")}
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
				var werr error
				if out == "json" {
					werr = rep.WriteJSON(g.stdout)
				} else {
					werr = rep.WriteMarkdown(g.stdout)
				}
				err = errors.Join(err, werr)
			}
			return err
		},
	}
	pf := cmd.Flags()
	pf.StringVar(&lf.stateDir, "state-dir", lab.DefaultStateDir, "directory of the lab's state, logs and etcd data")
	pf.StringVar(&lf.binDir, "bin-dir", "", "directory holding slimd and slim-cni (default: slimctl's own)")
	pf.StringVar(&format, "format", "markdown", "output format: markdown or json (same as -o table|json)")
	pf.IntVar(&cfg.Runs, "runs", 0, fmt.Sprintf("runs; every figure is their median (default %d, --quick %d)", bench.DefaultRuns, bench.QuickRuns))
	pf.BoolVar(&cfg.Quick, "quick", false, fmt.Sprintf("%d runs of %v tests instead of %d of %v-%v", bench.QuickRuns, bench.QuickTCPTime,
		bench.DefaultRuns, bench.DefaultRRTime, bench.DefaultTCPTime))
	pf.BoolVar(&cfg.Keep, "keep", false, "leave the lab the benchmark built up afterwards")
	pf.BoolVar(&cfg.Reuse, "reuse", false, "benchmark the running lab at --state-dir instead of building one; leave it up")
	pf.StringVar(&cfg.Probe, "probe", "", "slimprobe binary (default: next to slimctl, then PATH)")
	pf.DurationVar(&cfg.TCPTime, "tcp-time", 0, fmt.Sprintf("each iperf3 test's duration, whole seconds (default %v)", bench.DefaultTCPTime))
	pf.DurationVar(&cfg.RRTime, "rr-time", 0, fmt.Sprintf("each rr test's duration (default %v)", bench.DefaultRRTime))
	pf.DurationVar(&cfg.CRRTime, "crr-time", 0, fmt.Sprintf("each crr test's duration (default %v)", bench.DefaultCRRTime))
	pf.IntVar(&cfg.RRSize, "rr-size", 0, fmt.Sprintf("rr message size in bytes (default %d)", bench.DefaultRRSize))
	pf.IntVar(&cfg.CRRWorkers, "crr-workers", 0, fmt.Sprintf("crr clients at once (default %d)", bench.DefaultCRRWorkers))
	return cmd
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
	return "", fmt.Errorf("%s not found next to slimctl or in PATH: build it with CGO_ENABLED=0 go build -o <dir>/ ./test/slimprobe, or pass --probe", benchProbe)
}
