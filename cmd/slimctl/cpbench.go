package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/slimnet/slim/internal/cpbench"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// newBenchControlPlaneCmd is `slimctl bench control-plane`.
func newBenchControlPlaneCmd(g *globals, lf *labFlags) *cobra.Command {
	cfg := cpbench.Config{}
	var slimd string
	var onLab bool
	cmd := &cobra.Command{
		Use:   "control-plane",
		Short: "Measure the control plane at cluster size against a real 3-member etcd cluster",
		Long: `Simulate a cluster's hosts against a real 3-member etcd cluster (slimd etcd
processes on loopback, data on --dir) with the store code slimd runs: each
host claims its subnet, keeps a lease, and creates its endpoints and
listeners through the same transactions. Watcher processes run slimd's
store caches (hosts, endpoints, listeners) beside them. For each cluster
size in --hosts it reports: a new watcher's cold start (time, bytes read,
memory), how long a write takes to reach every watcher while
--churn of the endpoints are replaced per minute, etcd's database size and
gRPC requests per second per host, and a mass restart (every host and
watcher reconnecting at once). docs/scale.md explains the figures.

With --lab it measures whole slimds instead: it adds the simulated hosts
(the first size of --hosts) to the running lab at --state-dir, whose store
must be an external etcd cluster with room for them:
  slimctl lab up --hosts 2 --etcd-members 3 --cluster-cidr 10.128.0.0/9 --port-block-size 64
and reports h1's and h2's slimd memory before and after, the time until
they know every host and have programmed every overlay peer, the size of
the BPF port block map, h1's slimd's CPU share under churn, and a restart
of h2's slimd. slimctl lab down removes everything afterwards.

Needs slimd next to slimctl (or --slimd). 100, 500 and 2,000 hosts of 100
endpoints take about 12 minutes on 2 cores, most of it making the 200,000
endpoints through the store's transactions.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Slimd = slimd
			if cfg.Slimd == "" {
				cfg.Slimd = filepath.Join(filepath.Dir(exe), "slimd")
			}
			if _, err := os.Stat(cfg.Slimd); err != nil {
				return fmt.Errorf("slimd for the etcd members: %w (build it next to slimctl or pass --slimd)", err)
			}
			cfg.Watcher = []string{exe, "bench", "control-plane-watcher"}
			if !g.quiet {
				cfg.Progress = g.stderr
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), unix.SIGINT, unix.SIGTERM)
			defer stop()
			if onLab {
				lc, err := lf.config(g)
				if err != nil {
					return err
				}
				r, err := cpbench.RunOnLab(ctx, lc, cfg, cfg.Hosts[0])
				if perr := printOut(g, r, func(w io.Writer) { labTable(w, r) }); perr != nil {
					return perr
				}
				return err
			}
			rs, err := cpbench.Run(ctx, cfg)
			if perr := printOut(g, rs, func(w io.Writer) { cpTable(w, rs) }); perr != nil {
				return perr
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntSliceVar(&cfg.Hosts, "hosts", []int{100, 500, 2000}, "cluster sizes to measure, one fresh etcd cluster each")
	f.IntVar(&cfg.EndpointsPerHost, "endpoints", 100, "endpoints (containers) per host")
	f.IntVar(&cfg.ListenersPerHost, "listeners", 10, "published listeners per host")
	f.IntVar(&cfg.Watchers, "watchers", 3, "simulated slimds watching the store")
	f.Float64Var(&cfg.Churn, "churn", 0.01, "share of endpoints replaced per minute")
	f.DurationVar(&cfg.Duration, "duration", time.Minute, "how long churn runs while propagation is timed")
	f.StringVar(&cfg.Dir, "dir", "/dev/shm", "where the etcd members keep their data")
	f.StringVar(&slimd, "slimd", "", "slimd binary (default: next to slimctl)")
	f.BoolVar(&onLab, "lab", false, "add the simulated hosts to the running lab and measure its real slimds")
	return cmd
}

func cpTable(w io.Writer, rs []cpbench.Result) {
	fmt.Fprintln(w, "HOSTS\tENDPOINTS\tSEED\tCOLD START\tREAD\tRSS\tHEAP\tPROPAGATION P50\tP99\tMAX\tWRITES\tDB\tREQ/S PER HOST\tMASS RESTART\tRESYNC\tETCD UP")
	for _, r := range rs {
		fmt.Fprintf(w, "%d\t%d\t%.0fs\t%.2fs\t%.1f MB\t%.0f MB\t%.0f MB\t%.0f ms\t%.0f ms\t%.0f ms\t%d\t%.0f MB\t%.2f\t%.1fs\t%.1fs\t%t\n",
			r.Hosts, r.Endpoints, r.SeedSeconds, r.ColdStartSeconds, float64(r.ColdStartBytes)/1e6, float64(r.RSSBytes)/(1<<20),
			float64(r.HeapBytes)/(1<<20), r.PropagationP50*1000, r.PropagationP99*1000, r.PropagationMax*1000, r.Writes,
			float64(r.DBBytes)/1e6, r.RequestsPerHost, r.MassRestartSeconds, r.MassRestartSyncSeconds, r.EtcdSurvived)
	}
}

func labTable(w io.Writer, r cpbench.LabResult) {
	fmt.Fprintln(w, "HOSTS\tENDPOINTS\tSEED\tCONVERGE\tH1 RSS BEFORE\tAFTER\tPEAK\tH1 LIVE HEAP\tH2 RSS AFTER\tPEAK\tRESTARTED PEAK\tBPF BLOCKS\tCHURN WRITES\tH1 CPU\tH2 RESTART")
	fmt.Fprintf(w, "%d\t%d\t%.0fs\t%.1fs\t%d MB\t%d MB\t%d MB\t%d MB\t%d MB\t%d MB\t%d MB\t%d\t%d\t%.0f%%\t%.1fs\n", r.Hosts, r.Endpoints, r.SeedSeconds, r.ConvergeSeconds,
		r.RSSBefore["h1"]>>20, r.RSSAfter["h1"]>>20, r.RSSPeak["h1"]>>20, r.HeapLive>>20, r.RSSAfter["h2"]>>20, r.RSSPeak["h2"]>>20, r.RSSPeak["h2 restarted"]>>20,
		r.BPFPortBlocks, r.ChurnWrites, 100*r.CPUShare, r.RestartSeconds)
}

// newBenchCPWatcherCmd is the hidden watcher process of control-plane.
func newBenchCPWatcherCmd() *cobra.Command {
	var endpoints, prefix string
	cmd := &cobra.Command{
		Use:    "control-plane-watcher --endpoints URL,... --prefix P",
		Short:  "Run slimd's store caches and report what they apply (control-plane's watcher)",
		Hidden: true,
		Args:   usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), unix.SIGINT, unix.SIGTERM)
			defer stop()
			return cpbench.RunWatcher(ctx, strings.Split(endpoints, ","), prefix, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&endpoints, "endpoints", "", "etcd client URLs")
	cmd.Flags().StringVar(&prefix, "prefix", "", "store prefix")
	return cmd
}
