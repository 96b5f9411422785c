package bench

import "fmt"

// Tests, in the order they run within a run.
const (
	TestTCP1 = "tcp1"
	TestTCP4 = "tcp4"
	TestRR   = "rr"
	TestCRR  = "crr"
)

// Tests lists the tests in run order.
var Tests = []string{TestTCP1, TestTCP4, TestRR, TestCRR}

// Figure IDs (Figure.ID). They are part of the JSON contract.
const (
	FigTCP1Throughput   = "tcp1.throughput"
	FigTCP4Throughput   = "tcp4.throughput"
	FigRRP50            = "rr.p50"
	FigRRP99            = "rr.p99"
	FigRRRate           = "rr.rate"
	FigCRRRate          = "crr.rate"
	FigCRRConnectP50    = "crr.connectP50"
	FigCRRConnectP99    = "crr.connectP99"
	FigTCP1CPU          = "tcp1.cpuPerGB"
	FigTCP4CPU          = "tcp4.cpuPerGB"
	FigRRCPU            = "rr.cpuPerTransaction"
	FigCRRCPU           = "crr.cpuPerConnection"
	FigCRRSlimdCPU      = "crr.slimdCPUPerConnection"
	higher, lower       = "higher", "lower"
	unitCPUPerGB        = "CPU s/GB"
	unitCPUPerOperation = "CPU µs/op"
)

// goal is a bound on the ratio mode/base of medians.
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
)

// figureDef describes a figure; the order of figureDefs is the table's.
type figureDef struct {
	id, test, name, unit, better string
	goal                         *goal
}

var figureDefs = []figureDef{
	{FigTCP1Throughput, TestTCP1, "TCP throughput, 1 stream", "Gbit/s", higher, goalThroughput},
	{FigTCP4Throughput, TestTCP4, "TCP throughput, 4 streams", "Gbit/s", higher, goalThroughput},
	{FigRRP50, TestRR, "Request/response latency p50", "µs", lower, goalLatency},
	{FigRRP99, TestRR, "Request/response latency p99", "µs", lower, goalLatency},
	{FigRRRate, TestRR, "Request/response rate", "transactions/s", higher, nil},
	{FigCRRRate, TestCRR, "Connection setup rate", "connections/s", higher, goalSetup},
	{FigCRRConnectP50, TestCRR, "Connection setup latency p50", "µs", lower, nil},
	{FigCRRConnectP99, TestCRR, "Connection setup latency p99", "µs", lower, nil},
	{FigTCP1CPU, TestTCP1, "CPU per GB, 1 stream", unitCPUPerGB, lower, goalCPU},
	{FigTCP4CPU, TestTCP4, "CPU per GB, 4 streams", unitCPUPerGB, lower, goalCPU},
	{FigRRCPU, TestRR, "CPU per request/response", unitCPUPerOperation, lower, goalCPU},
	{FigCRRCPU, TestCRR, "CPU per connection", unitCPUPerOperation, lower, goalCPU},
	// Where slim's connection setup cost goes: the part spent in the
	// slimds (broker), from their cgroups' cpu.stat. Host and overlay
	// connections do not involve slimd: about zero.
	{FigCRRSlimdCPU, TestCRR, "slimd CPU per connection", unitCPUPerOperation, lower, nil},
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
// that were not run at all are left out.
func (s Samples) Figures(tests []string) ([]Figure, GoalCount) {
	ran := map[string]bool{}
	for _, t := range tests {
		ran[t] = true
	}
	var figs []Figure
	var gc GoalCount
	for _, d := range figureDefs {
		if !ran[d.test] {
			continue
		}
		f := Figure{ID: d.id, Test: d.test, Name: d.name, Unit: d.unit, Better: d.better,
			Results: map[string]Summary{}, Ratios: map[string]float64{}}
		for _, mode := range Modes {
			f.Results[mode] = Summarize(s[d.id][mode])
		}
		for _, p := range ratioPairs {
			if r, ok := Ratio(f.Results[p[0]], f.Results[p[1]]); ok {
				f.Ratios[p[0]+"/"+p[1]] = r
			}
		}
		if d.goal != nil {
			f.Goal = d.goal.evaluate(f)
			gc.Total++
			if f.Goal.Evaluated {
				gc.Evaluated++
			}
			if f.Goal.Met {
				gc.Met++
			}
		}
		figs = append(figs, f)
	}
	return figs, gc
}

func (g *goal) evaluate(f Figure) *GoalResult {
	r := &GoalResult{Mode: g.mode, Base: g.base, AtLeast: g.atLeast, AtMost: g.atMost}
	if g.atLeast > 0 {
		r.Text = fmt.Sprintf("%s >= %s x %s", g.mode, formatBound(g.atLeast), g.base)
	} else {
		r.Text = fmt.Sprintf("%s <= %s x %s", g.mode, formatBound(g.atMost), g.base)
	}
	ratio, ok := Ratio(f.Results[g.mode], f.Results[g.base])
	if !ok {
		return r
	}
	r.Evaluated, r.Ratio = true, ratio
	// The exact ratio is compared (a ratio printed as 0.95 may be 0.9496,
	// not met); eps only absorbs floating-point noise.
	const eps = 1e-9
	if g.atLeast > 0 {
		r.Met = ratio >= g.atLeast-eps
	} else {
		r.Met = ratio <= g.atMost+eps
	}
	return r
}
