// Package bench measures Slim against host networking and the plain VXLAN
// overlay on the lab, side by side in one run: what `slimctl bench` runs.
//
// Three modes, on a 2-host lab (see package lab):
//
//	host     a process in host h2's namespace talks to one in h1's, over
//	         the underlay: the reference every ratio is taken against;
//	overlay  container to container with the fast path off (--no-slim):
//	         veth, routing and VXLAN, as flannel's vxlan backend does it;
//	slim     container to container on the fast path: connections to a
//	         virtual IP with a listener are swapped onto host sockets.
//
// Ten tests, each run in every mode, the modes interleaved within each run
// (run 1: host, overlay, slim; run 2: ...) so that all of them see the same
// machine state. Five network tests:
//
//	tcp1, tcp4  iperf3 bulk TCP throughput, 1 and 4 streams;
//	rr          request/response ping-pong on one connection
//	            (slimprobe rr): latency p50/p99 and transactions per second;
//	crr         connect, 1-byte request, 1-byte response, close
//	            (slimprobe crr): connections per second and connect latency;
//	crr1        the same from a C client (crr1.c, compiled at run time),
//	            one connection at a time, the client closing first, as
//	            netperf's TCP_CRR: connections per second, connect-to-close
//	            latency, and in slim mode the broker's connect handler time
//	            (the client host's slimd metrics).
//
// and five application tests, as in the Slim paper (see apps.go): memcached
// (slimprobe's memcached load generator), nginx with wrk, keep-alive and
// one request per connection (nginx, nginx-close), PostgreSQL with
// pgbench -S (pgbench), and Redis with redis-benchmark (redis). Their
// servers run in each mode's server namespace for the whole benchmark.
//
// Every test also measures the whole machine's CPU time over its window
// (user, nice, system, irq and softirq from /proc/stat, read with
// prometheus/procfs; slimprobe and crr1 read it themselves around their
// timed loop and report it, see package wire), expressed per GB received
// or per transaction. Every figure is the median of the runs, with
// min and max, and the ratios overlay/host, slim/host and slim/overlay; the
// design's goals for slim are evaluated on the medians.
//
// The measurement is a pure core (statistics, iperf3, wrk, pgbench,
// redis-benchmark and slimprobe output parsing, the report and its
// Markdown rendering) and an orchestrator (Run) that drives the lab
// through package lab's API only: every process it starts is in a lab
// cgroup, so lab.Down removes it whatever happens to the benchmark. Each
// test is one type implementing benchTest (tests.go: what it needs, its
// server, how long it takes, how it measures); Run knows no test by name.
// Files: config.go (Config), runner.go (Run: lab, servers, teardown),
// measure.go (one test in one mode: CPU time, vxlan bytes, per-side CPU),
// network.go, crr1.go and apps.go (the tests), machine.go, report.go.
//
// The Report's JSON form is a contract: fields are added, never renamed.
// It carries every sample, so that it can be rendered again (ReadJSON)
// and charted (WriteCharts: PNG bar charts drawn with gonum/plot, one per
// figure group) without running again.
//
// What the package leaves to others: building the lab (package lab) and
// the binaries; iperf3, memcached, nginx, wrk, PostgreSQL and Redis are
// Debian's (scripts/deps.sh installs them), so is the C compiler crr1
// needs (gcc, libc6-dev), and slimprobe is cmd/slimprobe, built with
// CGO_ENABLED=0.
package bench
