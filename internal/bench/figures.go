package bench

import (
	"fmt"
	"slices"
	"time"
)

// Figure groups (Figure.Group): one chart each.
const (
	GroupThroughput = "throughput"
	GroupLatency    = "latency"
	GroupSetup      = "setup"
	GroupCPU        = "cpu"
	GroupApps       = "apps"
	// GroupCPUSides holds the per-side CPU figures.
	GroupCPUSides = "cpuSides"
)

// Groups lists the figure groups in the order they are charted.
var Groups = []string{GroupThroughput, GroupLatency, GroupSetup, GroupCPU, GroupApps, GroupCPUSides}

// Figure IDs (Figure.ID). They are part of the JSON contract.
const (
	FigTCP1Throughput = "tcp1.throughput"
	FigTCP4Throughput = "tcp4.throughput"
	FigRRP50          = "rr.p50"
	FigRRP99          = "rr.p99"
	FigRRRate         = "rr.rate"
	FigCRRRate        = "crr.rate"
	FigCRRConnectP50  = "crr.connectP50"
	FigCRRConnectP99  = "crr.connectP99"
	FigTCP1CPU        = "tcp1.cpuPerGB"
	FigTCP4CPU        = "tcp4.cpuPerGB"
	FigRRCPU          = "rr.cpuPerTransaction"
	FigCRRCPU         = "crr.cpuPerConnection"
	FigCRR1Rate       = "crr1.rate"
	FigCRR1P50        = "crr1.p50"
	FigCRR1P99        = "crr1.p99"
	FigCRR1CPU        = "crr1.cpuPerConnection"
	// FigCRR1SlimdCPU is the client host's slimd alone (the broker that
	// handles the connects), apart from the per-side figure of both.
	FigCRR1SlimdCPU   = "crr1.clientSlimdCPUPerConnection"
	FigCRR1HandlerP50 = "crr1.handlerP50"
	FigCRR1HandlerP99 = "crr1.handlerP99"
	// FigCRR1PolicyRatio is crr1's rate with --policies N policies in
	// force over its rate without, side by side in one measurement.
	FigCRR1PolicyRatio = "crr1.policyRatio"
	// FigCRR1ServiceRatio is crr1's rate through a service (--service)
	// over its rate to the server's own address.
	FigCRR1ServiceRatio = "crr1.serviceRatio"

	FigMemcachedRate  = "memcached.rate"
	FigMemcachedP50   = "memcached.p50"
	FigMemcachedP99   = "memcached.p99"
	FigMemcachedCPU   = "memcached.cpuPerOp"
	FigNginxRate      = "nginx.rate"
	FigNginxP50       = "nginx.p50"
	FigNginxP99       = "nginx.p99"
	FigNginxCPU       = "nginx.cpuPerRequest"
	FigNginxCloseRate = "nginxClose.rate"
	FigNginxCloseP50  = "nginxClose.p50"
	FigNginxCloseP99  = "nginxClose.p99"
	FigNginxCloseCPU  = "nginxClose.cpuPerRequest"
	FigPgbenchRate    = "pgbench.tps"
	FigPgbenchLatency = "pgbench.latency"
	FigPgbenchCPU     = "pgbench.cpuPerTransaction"
	FigRedisSetRate   = "redis.setRate"
	FigRedisGetRate   = "redis.getRate"
	FigRedisGetP50    = "redis.getP50"
	FigRedisGetP99    = "redis.getP99"
	FigRedisCPU       = "redis.cpuPerOp"

	higher, lower       = "higher", "lower"
	unitCPUPerGB        = "CPU s/GB"
	unitCPUPerOperation = "CPU µs/op"
)

// goal is a bound on the ratio mode/base of medians or, without a base,
// on mode's median itself, in the figure's unit.
type goal struct {
	mode, base      string
	atLeast, atMost float64
}

// The design's goals for slim.
var (
	// throughput >= 0.95x host
	goalThroughput = &goal{mode: ModeSlim, base: ModeHost, atLeast: 0.95}
	// latency <= 1.05x host
	goalLatency = &goal{mode: ModeSlim, base: ModeHost, atMost: 1.05}
	// CPU per operation <= 1.05x host
	goalCPU = &goal{mode: ModeSlim, base: ModeHost, atMost: 1.05}
	// connection setup rate >= 0.8x overlay
	goalSetup = &goal{mode: ModeSlim, base: ModeOverlay, atLeast: 0.8}
	// memcached and redis throughput >= 1.3x overlay (the paper measured
	// +66..71% for memcached)
	goalAppOverOverlay = &goal{mode: ModeSlim, base: ModeOverlay, atLeast: 1.3}
	// crr1, one connection at a time: nothing queues behind other
	// connections, so slim must set up connections as fast as the
	// overlay: rate >= 1.0x overlay, connect-to-close p50 <= 1.1x
	// overlay; slimd's CPU per connect <= 15 µs; the broker's handler
	// p50 <= 15 µs and p99 <= 100 µs.
	goalCRR1Rate       = &goal{mode: ModeSlim, base: ModeOverlay, atLeast: 1.0}
	goalCRR1Latency    = &goal{mode: ModeSlim, base: ModeOverlay, atMost: 1.1}
	goalCRR1SlimdCPU   = &goal{mode: ModeSlim, atMost: 15}
	goalCRR1HandlerP50 = &goal{mode: ModeSlim, atMost: 15}
	goalCRR1HandlerP99 = &goal{mode: ModeSlim, atMost: 100}
	// Network policy stays off the fast path's connect cost: crr1's rate
	// with 100 policies >= 0.95x without.
	goalCRR1Policies = &goal{mode: ModeSlim, atLeast: 0.95}
	// A service costs a connection nothing measurable: crr1's rate to a
	// service's IP >= 0.95x to its backend's own.
	goalCRR1Service = &goal{mode: ModeSlim, atLeast: 0.95}
)

// figureDef describes a figure; the order of figureDefs is the table's.
type figureDef struct {
	id, test, group, name, unit, better string
	// goals: the first is Figure.Goal, the others Figure.MoreGoals.
	goals []*goal
}

// shareFigures are CPU figures that are themselves a share of one side
// (crr1's client host's slimd): they get no per-side figures.
var shareFigures = map[string]bool{FigCRR1SlimdCPU: true}

// optionalFigures are measured only with some settings (policyRatio with
// --policies): without any sample they are left out, goal and all.
var optionalFigures = map[string]bool{FigCRR1PolicyRatio: true, FigCRR1ServiceRatio: true}

// goals is a figureDef's goal list.
func goals(g ...*goal) []*goal { return g }

// The application figures hold the same goals as the network figures
// (throughput, latency and CPU per operation against host), and
// memcached's and redis's throughput also the goal against overlay.
// nginx with one request per connection is connection setup: its rate
// also carries the setup goal. Application latencies under load are
// mostly queueing behind the other connections' requests, so their goal
// follows throughput's.
var figureDefs = withSides([]figureDef{
	{FigTCP1Throughput, TestTCP1, GroupThroughput, "TCP throughput, 1 stream", "Gbit/s", higher, goals(goalThroughput)},
	{FigTCP4Throughput, TestTCP4, GroupThroughput, "TCP throughput, 4 streams", "Gbit/s", higher, goals(goalThroughput)},
	{FigRRP50, TestRR, GroupLatency, "Request/response latency p50", "µs", lower, goals(goalLatency)},
	{FigRRP99, TestRR, GroupLatency, "Request/response latency p99", "µs", lower, goals(goalLatency)},
	{FigRRRate, TestRR, GroupThroughput, "Request/response rate", "transactions/s", higher, nil},
	{FigCRRRate, TestCRR, GroupSetup, "Connection setup rate", "connections/s", higher, goals(goalSetup)},
	{FigCRRConnectP50, TestCRR, GroupSetup, "Connection setup latency p50", "µs", lower, nil},
	{FigCRRConnectP99, TestCRR, GroupSetup, "Connection setup latency p99", "µs", lower, nil},
	{FigTCP1CPU, TestTCP1, GroupCPU, "CPU per GB, 1 stream", unitCPUPerGB, lower, goals(goalCPU)},
	{FigTCP4CPU, TestTCP4, GroupCPU, "CPU per GB, 4 streams", unitCPUPerGB, lower, goals(goalCPU)},
	{FigRRCPU, TestRR, GroupCPU, "CPU per request/response", unitCPUPerOperation, lower, goals(goalCPU)},
	{FigCRRCPU, TestCRR, GroupCPU, "CPU per connection", unitCPUPerOperation, lower, goals(goalCPU)},

	// crr1 (C client, one connection at a time): the broker's handler
	// time exists only in slim mode.
	{FigCRR1Rate, TestCRR1, GroupSetup, "crr1 connection rate", "connections/s", higher, goals(goalCRR1Rate)},
	{FigCRR1P50, TestCRR1, GroupSetup, "crr1 connect-to-close latency p50", "µs", lower, goals(goalCRR1Latency)},
	{FigCRR1P99, TestCRR1, GroupSetup, "crr1 connect-to-close latency p99", "µs", lower, nil},
	{FigCRR1CPU, TestCRR1, GroupCPU, "crr1 CPU per connection", unitCPUPerOperation, lower, nil},
	{FigCRR1SlimdCPU, TestCRR1, GroupCPU, "crr1 client host's slimd CPU per connection", unitCPUPerOperation, lower,
		goals(goalCRR1SlimdCPU)},
	{FigCRR1HandlerP50, TestCRR1, GroupSetup, "crr1 broker connect handler p50", "µs", lower, goals(goalCRR1HandlerP50)},
	{FigCRR1HandlerP99, TestCRR1, GroupSetup, "crr1 broker connect handler p99", "µs", lower, goals(goalCRR1HandlerP99)},
	{FigCRR1PolicyRatio, TestCRR1, GroupSetup, "crr1 rate with --policies N over without", "×", higher, goals(goalCRR1Policies)},
	{FigCRR1ServiceRatio, TestCRR1, GroupSetup, "crr1 rate through a service (--service) over direct", "×", higher, goals(goalCRR1Service)},

	{FigMemcachedRate, TestMemcached, GroupApps, "memcached throughput", "ops/s", higher, goals(goalThroughput, goalAppOverOverlay)},
	{FigMemcachedP50, TestMemcached, GroupApps, "memcached latency p50", "µs", lower, goals(goalLatency)},
	{FigMemcachedP99, TestMemcached, GroupApps, "memcached latency p99", "µs", lower, goals(goalLatency)},
	{FigMemcachedCPU, TestMemcached, GroupApps, "memcached CPU per op", unitCPUPerOperation, lower, goals(goalCPU)},
	{FigNginxRate, TestNginx, GroupApps, "nginx keep-alive rate", "requests/s", higher, goals(goalThroughput)},
	{FigNginxP50, TestNginx, GroupApps, "nginx keep-alive latency p50", "µs", lower, goals(goalLatency)},
	{FigNginxP99, TestNginx, GroupApps, "nginx keep-alive latency p99", "µs", lower, goals(goalLatency)},
	{FigNginxCPU, TestNginx, GroupApps, "nginx keep-alive CPU per request", unitCPUPerOperation, lower, goals(goalCPU)},
	{FigNginxCloseRate, TestNginxClose, GroupApps, "nginx conn/request rate", "requests/s", higher, goals(goalThroughput, goalSetup)},
	{FigNginxCloseP50, TestNginxClose, GroupApps, "nginx conn/request latency p50", "µs", lower, goals(goalLatency)},
	{FigNginxCloseP99, TestNginxClose, GroupApps, "nginx conn/request latency p99", "µs", lower, goals(goalLatency)},
	{FigNginxCloseCPU, TestNginxClose, GroupApps, "nginx conn/request CPU per request", unitCPUPerOperation, lower, goals(goalCPU)},
	{FigPgbenchRate, TestPgbench, GroupApps, "PostgreSQL select-only rate", "transactions/s", higher, goals(goalThroughput)},
	{FigPgbenchLatency, TestPgbench, GroupApps, "PostgreSQL latency average", "µs", lower, goals(goalLatency)},
	{FigPgbenchCPU, TestPgbench, GroupApps, "PostgreSQL CPU per transaction", unitCPUPerOperation, lower, goals(goalCPU)},
	{FigRedisSetRate, TestRedis, GroupApps, "Redis SET rate", "requests/s", higher, goals(goalThroughput, goalAppOverOverlay)},
	{FigRedisGetRate, TestRedis, GroupApps, "Redis GET rate", "requests/s", higher, goals(goalThroughput, goalAppOverOverlay)},
	{FigRedisGetP50, TestRedis, GroupApps, "Redis GET latency p50", "µs", lower, goals(goalLatency)},
	{FigRedisGetP99, TestRedis, GroupApps, "Redis GET latency p99", "µs", lower, goals(goalLatency)},
	{FigRedisCPU, TestRedis, GroupApps, "Redis CPU per request", unitCPUPerOperation, lower, goals(goalCPU)},
})

// The sides of a per-side CPU figure: the client's cgroup, the server's
// (a lab host's exec cgroup in host mode, the container's otherwise), and
// both hosts' slimds. Host and overlay connections do not involve slimd,
// so its share there is its background work (and h1's embedded etcd).
const (
	sideClient = "client"
	sideServer = "server"
	sideSlimd  = "slimd"
)

var sideNames = map[string]string{sideClient: "client side", sideServer: "server side", sideSlimd: "slimds"}

// The slimd shares that had figures of their own before the other sides
// were measured keep their IDs.
const (
	FigCRRSlimdCPU     = "crr.slimdCPUPerConnection"
	FigNginxCloseSlimd = "nginxClose.slimdCPUPerRequest"
)

// sideFigureID is the ID of side's share of the CPU figure cpuID:
// cpuID + "." + side ("rr.cpuPerTransaction.server").
func sideFigureID(cpuID, side string) string {
	switch {
	case cpuID == FigCRRCPU && side == sideSlimd:
		return FigCRRSlimdCPU
	case cpuID == FigNginxCloseCPU && side == sideSlimd:
		return FigNginxCloseSlimd
	}
	return cpuID + "." + side
}

func isCPUUnit(unit string) bool { return unit == unitCPUPerGB || unit == unitCPUPerOperation }

// cpuIn is d in a CPU unit's time unit: seconds per GB, µs per operation.
func cpuIn(unit string, d time.Duration) float64 {
	if unit == unitCPUPerGB {
		return d.Seconds()
	}
	return float64(d.Nanoseconds()) / 1e3
}

// figureUnit is the unit of figure id.
func figureUnit(id string) string {
	for _, d := range figureDefs {
		if d.id == id {
			return d.unit
		}
	}
	return ""
}

// withSides appends to defs, for each CPU figure, its three per-side
// figures, in the same order. They carry no goals: the goal is for the
// whole machine.
func withSides(defs []figureDef) []figureDef {
	out := slices.Clone(defs)
	for _, d := range defs {
		if !isCPUUnit(d.unit) || shareFigures[d.id] {
			continue
		}
		for _, side := range []string{sideClient, sideServer, sideSlimd} {
			out = append(out, figureDef{id: sideFigureID(d.id, side), test: d.test, group: GroupCPUSides,
				name: d.name + ", " + sideNames[side], unit: d.unit, better: lower})
		}
	}
	return out
}

// Samples collects the values measured, per figure and mode, in run
// order.
type Samples map[string]map[string][]float64

// Add records one value of figure id in mode.
func (s Samples) Add(id, mode string, v float64) {
	if s[id] == nil {
		s[id] = map[string][]float64{}
	}
	s[id][mode] = append(s[id][mode], v)
}

// Figures summarizes the samples into the report's figures, computes the
// ratios and evaluates the goals, in figureDefs' order. Figures of tests
// that were not run at all are left out, and optional ones never measured.
func (s Samples) Figures(tests []string) ([]Figure, GoalCount) {
	ran := map[string]bool{}
	for _, t := range tests {
		ran[t] = true
	}
	var figs []Figure
	var gc GoalCount
	for _, d := range figureDefs {
		if !ran[d.test] || optionalFigures[d.id] && len(s[d.id]) == 0 {
			continue
		}
		f := Figure{ID: d.id, Test: d.test, Group: d.group, Name: d.name, Unit: d.unit, Better: d.better,
			Results: map[string]Summary{}, Ratios: map[string]float64{}}
		for _, mode := range Modes {
			f.Results[mode] = Summarize(s[d.id][mode])
		}
		for _, p := range ratioPairs {
			if r, ok := Ratio(f.Results[p[0]], f.Results[p[1]]); ok {
				f.Ratios[p[0]+"/"+p[1]] = r
			}
		}
		for i, g := range d.goals {
			r := g.evaluate(f)
			if i == 0 {
				f.Goal = r
			} else {
				f.MoreGoals = append(f.MoreGoals, r)
			}
			gc.Total++
			if r.Evaluated {
				gc.Evaluated++
			}
			if r.Met {
				gc.Met++
			}
		}
		figs = append(figs, f)
	}
	return figs, gc
}

func (g *goal) evaluate(f Figure) *GoalResult {
	r := &GoalResult{Mode: g.mode, Base: g.base, AtLeast: g.atLeast, AtMost: g.atMost}
	// The exact value is compared (a ratio printed as 0.95 may be 0.9496,
	// not met); eps only absorbs floating-point noise.
	const eps = 1e-9
	met := func(v float64) bool {
		if g.atLeast > 0 {
			return v >= g.atLeast-eps
		}
		return v <= g.atMost+eps
	}
	if g.base == "" {
		r.Unit = f.Unit
		if g.atLeast > 0 {
			r.Text = fmt.Sprintf("%s >= %s %s", g.mode, formatBound(g.atLeast), f.Unit)
		} else {
			r.Text = fmt.Sprintf("%s <= %s %s", g.mode, formatBound(g.atMost), f.Unit)
		}
		s := f.Results[g.mode]
		if s.Runs == 0 {
			return r
		}
		r.Evaluated, r.Value, r.Met = true, s.Median, met(s.Median)
		return r
	}
	if g.atLeast > 0 {
		r.Text = fmt.Sprintf("%s >= %s x %s", g.mode, formatBound(g.atLeast), g.base)
	} else {
		r.Text = fmt.Sprintf("%s <= %s x %s", g.mode, formatBound(g.atMost), g.base)
	}
	ratio, ok := Ratio(f.Results[g.mode], f.Results[g.base])
	if !ok {
		return r
	}
	r.Evaluated, r.Ratio, r.Met = true, ratio, met(ratio)
	return r
}
