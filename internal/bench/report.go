package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// The three modes, in the order they run and are printed.
const (
	ModeHost    = "host"
	ModeOverlay = "overlay"
	ModeSlim    = "slim"
)

// Modes lists the modes in run order.
var Modes = []string{ModeHost, ModeOverlay, ModeSlim}

// ratioPairs are the ratios every figure carries, "a/b".
var ratioPairs = [][2]string{{ModeOverlay, ModeHost}, {ModeSlim, ModeHost}, {ModeSlim, ModeOverlay}}

// SchemaVersion is Report.Schema; it changes only if a field must change
// meaning, which the contract forbids, so it stays 1.
const SchemaVersion = 1

// Report is a benchmark's result. Its JSON form is a contract (slimctl
// bench -o json): add fields, never rename them.
type Report struct {
	Schema   int       `json:"schema"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	Modes    []string  `json:"modes"`
	Figures  []Figure  `json:"figures"`
	FastPath FastPath  `json:"fastPath"`
	// Goals counts the goals met among those that could be evaluated.
	Goals    GoalCount `json:"goals"`
	Warnings []string  `json:"warnings"`
}

// Machine describes where the benchmark ran.
type Machine struct {
	Kernel   string `json:"kernel"`
	CPUModel string `json:"cpuModel"`
	CPUs     int    `json:"cpus"`
	// Hosts is the number of lab hosts (network namespaces) used.
	Hosts int `json:"hosts"`
}

// Settings are the parameters of the run.
type Settings struct {
	Runs       int     `json:"runs"`
	Quick      bool    `json:"quick"`
	TCPSeconds int     `json:"tcpSeconds"`
	RRSeconds  float64 `json:"rrSeconds"`
	RRSize     int     `json:"rrSize"`
	CRRSeconds float64 `json:"crrSeconds"`
	CRRWorkers int     `json:"crrWorkers"`
	// Tests are the tests that were run, in run order (absent in
	// reports from before the application tests: the four core tests).
	Tests []string `json:"tests,omitempty"`
	// Apps are the application tests' parameters, when any ran.
	Apps *AppSettings `json:"apps,omitempty"`
	// CRR1 is the crr1 test's setup, when it ran.
	CRR1 *CRR1Settings `json:"crr1,omitempty"`
}

// CRR1Settings are the crr1 test's parameters: its C client's build, and
// the sysctl the benchmark set for it.
type CRR1Settings struct {
	// Seconds is each run's duration (crr's, --crr-time).
	Seconds float64 `json:"seconds"`
	// Compiler is the C compiler's first line of --version; Static is
	// false when the client had to be linked dynamically.
	Compiler string `json:"compiler"`
	Static   bool   `json:"static"`
	// TWReuse: net.ipv4.tcp_tw_reuse was set to 1 in every client
	// namespace (the client host's and the client containers') and left
	// so for the rest of the run.
	TWReuse bool `json:"tcpTwReuse"`
	// Policies is how many network policies crr1.policyRatio measured
	// with (--policies), if any.
	Policies int `json:"policies,omitempty"`
	// Service: crr1.serviceRatio measured through a service (--service).
	Service bool `json:"service,omitempty"`
}

// AppSettings are the application tests' parameters.
type AppSettings struct {
	// Seconds is each application test's duration (redis-benchmark's
	// request count is sized to take about as long in host mode).
	Seconds int `json:"seconds"`
	// memcached: slimprobe memcached's connections, keys, value size
	// and sets:gets ratio.
	MemcachedConns     int    `json:"memcachedConns"`
	MemcachedKeys      int    `json:"memcachedKeys"`
	MemcachedValueSize int    `json:"memcachedValueSize"`
	MemcachedRatio     string `json:"memcachedRatio"`
	// wrk's threads and connections, for both nginx tests.
	WrkThreads int `json:"wrkThreads"`
	WrkConns   int `json:"wrkConns"`
	// pgbench's clients and threads (-c, -j) and scale (-s).
	PgbenchClients int `json:"pgbenchClients"`
	PgbenchThreads int `json:"pgbenchThreads"`
	PgbenchScale   int `json:"pgbenchScale"`
	// redis-benchmark's clients (-c) and requests per test (-n).
	RedisClients  int `json:"redisClients"`
	RedisRequests int `json:"redisRequests"`
}

// Figure is one measured quantity in every mode.
type Figure struct {
	// ID names the figure (see figureDefs); stable across versions.
	ID string `json:"id"`
	// Test is the test that produced it: tcp1, tcp4, rr, crr, crr1, or an
	// application test (memcached, nginx, nginx-close, pgbench, redis).
	Test string `json:"test"`
	// Group is the chart the figure is drawn in: throughput, latency,
	// setup, cpu or apps.
	Group string `json:"group"`
	Name  string `json:"name"`
	Unit  string `json:"unit"`
	// Better is "higher" or "lower".
	Better string `json:"better"`
	// Results holds one summary per mode.
	Results map[string]Summary `json:"results"`
	// Ratios of medians, keyed "overlay/host", "slim/host" and
	// "slim/overlay"; a ratio that is undefined is left out.
	Ratios map[string]float64 `json:"ratios"`
	// Goal is the design's goal for slim, if the figure has one.
	Goal *GoalResult `json:"goal,omitempty"`
	// MoreGoals are the figure's further goals, if it has more than one
	// (memcached's throughput: against host and against overlay).
	MoreGoals []*GoalResult `json:"moreGoals,omitempty"`
}

// Goals lists all of f's goals: Goal, then MoreGoals.
func (f Figure) Goals() []*GoalResult {
	if f.Goal == nil {
		return nil
	}
	return append([]*GoalResult{f.Goal}, f.MoreGoals...)
}

// GoalResult is a goal and whether it was met.
type GoalResult struct {
	// Text says the goal: "slim >= 0.95 x host", or "slim <= 15 µs".
	Text string `json:"text"`
	// Mode's median over Base's median must be at least AtLeast, or at
	// most AtMost (the other one is zero). Without a Base the bound is
	// on Mode's median itself, in Unit.
	Mode    string  `json:"mode"`
	Base    string  `json:"base"`
	AtLeast float64 `json:"atLeast,omitempty"`
	AtMost  float64 `json:"atMost,omitempty"`
	// Evaluated is false when a mode has no value; Met is then false.
	Evaluated bool `json:"evaluated"`
	// Ratio is the ratio compared; zero without a Base.
	Ratio float64 `json:"ratio"`
	// Value and Unit: Mode's median compared to a bound without a Base.
	Value float64 `json:"value,omitempty"`
	Unit  string  `json:"unit,omitempty"`
	Met   bool    `json:"met"`
}

// GoalCount counts goals.
type GoalCount struct {
	Met       int `json:"met"`
	Evaluated int `json:"evaluated"`
	Total     int `json:"total"`
}

// FastPath is the check that slim mode's traffic left the overlay: the
// bytes the vxlan device of the client's host carried during each mode's
// tests. Overlay mode moves the same traffic through it.
type FastPath struct {
	Iface        string            `json:"iface"`
	OverlayBytes map[string]uint64 `json:"overlayBytes"`
	// Checked is false when the counters could not be read.
	Checked bool `json:"checked"`
	// OnFastPath: slim's tests moved less than 1% of what overlay's
	// moved through the device.
	OnFastPath bool `json:"onFastPath"`
}

// fastPathShare is how much of overlay mode's vxlan traffic slim mode may
// show and still count as on the fast path: a connection that fell back
// to the overlay moves all its bytes there, the fast path none.
const fastPathShare = 0.01

// judge fills OnFastPath from the counters.
func (f *FastPath) judge() {
	ov, sl := f.OverlayBytes[ModeOverlay], f.OverlayBytes[ModeSlim]
	f.OnFastPath = f.Checked && ov > 0 && float64(sl) <= fastPathShare*float64(ov)
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteMarkdown writes r as a Markdown document: a short description, the
// table, the fast-path check, the goals and any warnings.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## slimctl bench: host vs overlay vs slim\n\n")
	m, s := r.Machine, r.Settings
	fmt.Fprintf(&b, "%d lab hosts (network namespaces) on one machine: %d × %s, Linux %s. ", m.Hosts, m.CPUs, m.CPUModel, m.Kernel)
	quick := ""
	if s.Quick {
		quick = " (--quick)"
	}
	runs := "runs"
	if s.Runs == 1 {
		runs = "run"
	}
	fmt.Fprintf(&b, "%d %s%s, the modes interleaved in each; every cell is the median (min–max). ", s.Runs, runs, quick)
	fmt.Fprintf(&b, "tcp: iperf3, %d s; rr: slimprobe ping-pong, %d-byte messages, %s s; crr: slimprobe connect/request/response/close, %d workers, %s s. ",
		s.TCPSeconds, s.RRSize, formatBound(s.RRSeconds), s.CRRWorkers, formatBound(s.CRRSeconds))
	if a := s.Apps; a != nil {
		fmt.Fprintf(&b, "Applications, %d s each: memcached with slimprobe's load generator (%d connections, %s sets:gets, %d keys of %d bytes); "+
			"nginx with wrk (%d threads, %d connections, keep-alive and `Connection: close`); PostgreSQL with pgbench -S (%d clients, scale %d); "+
			"Redis with redis-benchmark SET and GET (%d clients, %d requests each). ",
			a.Seconds, a.MemcachedConns, a.MemcachedRatio, a.MemcachedKeys, a.MemcachedValueSize, a.WrkThreads, a.WrkConns,
			a.PgbenchClients, a.PgbenchScale, a.RedisClients, a.RedisRequests)
	}
	if c := s.CRR1; c != nil {
		link := "static"
		if !c.Static {
			link = "dynamic (static linking failed)"
		}
		fmt.Fprintf(&b, "crr1: a C client built at run time (`%s` -O2, linked %s), one connection at a time: socket, connect, 1-byte request, "+
			"1-byte response, close, the client closing first (against slimprobe crrserve -wait-eof), %s s; latency from before socket() to after close(); "+
			"the broker's connect handler times are the client host's slimd histogram over each slim run. ",
			c.Compiler, link, formatBound(c.Seconds))
		if c.TWReuse {
			b.WriteString("net.ipv4.tcp_tw_reuse=1 was set in every client namespace (the client host's, which also holds slim's host sockets, " +
				"and the client containers') before the tests, and left set for the rest of the run. ")
		}
	}
	fmt.Fprintf(&b, "CPU: the whole machine's busy time (/proc/stat), per GB received or per transaction.\n\n")

	var main, sides []Figure
	for _, f := range r.Figures {
		if figureGroup(f) == GroupCPUSides {
			sides = append(sides, f)
		} else {
			main = append(main, f)
		}
	}
	r.writeTable(&b, main, true)
	if len(sides) > 0 {
		b.WriteString("CPU per side: each cgroup's usage_usec (cpu.stat) over the client's command, per the same unit of work: " +
			"the client's and the server's (a lab host's cgroup in host mode, the container's otherwise) and both slimds'. " +
			"All hosts share one kernel, so softirq work is charged to whichever task the CPU was running: " +
			"much of the receiver's stack runs in the sender's context, and the sides do not add up to the whole machine.\n\n")
		r.writeTable(&b, sides, false)
	}

	r.writeMarkdownEnd(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeTable writes figs as a Markdown table, with the goal columns if
// goals.
func (r *Report) writeTable(b *strings.Builder, figs []Figure, goals bool) {
	b.WriteString("| Figure | Unit |")
	for _, mode := range r.Modes {
		fmt.Fprintf(b, " %s |", mode)
	}
	for _, p := range ratioPairs {
		fmt.Fprintf(b, " %s/%s |", p[0], p[1])
	}
	if goals {
		b.WriteString(" Goal for slim | Met |")
	}
	b.WriteString("\n|---|---|")
	for range r.Modes {
		b.WriteString("--:|")
	}
	for range ratioPairs {
		b.WriteString("--:|")
	}
	if goals {
		b.WriteString("---|---|")
	}
	b.WriteString("\n")
	for _, f := range figs {
		fmt.Fprintf(b, "| %s | %s |", f.Name, f.Unit)
		for _, mode := range r.Modes {
			fmt.Fprintf(b, " %s |", cell(f.Results[mode]))
		}
		for _, p := range ratioPairs {
			if v, ok := f.Ratios[p[0]+"/"+p[1]]; ok {
				fmt.Fprintf(b, " %s |", FormatValue(v))
			} else {
				b.WriteString(" - |")
			}
		}
		if !goals {
			b.WriteString("\n")
			continue
		}
		goal, met := "-", "-"
		if gs := f.Goals(); len(gs) > 0 {
			var gt, mt []string
			for _, g := range gs {
				gt = append(gt, goalText(g))
				switch {
				case !g.Evaluated:
					mt = append(mt, "-")
				case g.Met:
					mt = append(mt, "met")
				default:
					mt = append(mt, "**not met**")
				}
			}
			goal, met = strings.Join(gt, "; "), strings.Join(mt, "; ")
		}
		fmt.Fprintf(b, " %s | %s |\n", goal, met)
	}
	b.WriteString("\n")
}

// writeMarkdownEnd writes the fast-path check, the goals and the warnings.
func (r *Report) writeMarkdownEnd(b *strings.Builder) {
	fp := r.FastPath
	switch {
	case !fp.Checked:
		fmt.Fprintf(b, "Fast path: not checked (the %s counters could not be read).\n", fp.Iface)
	default:
		verdict := "slim's traffic took the fast path"
		if !fp.OnFastPath {
			verdict = "**slim's traffic was NOT on the fast path**"
		}
		fmt.Fprintf(b, "Fast path: %s carried %s during the slim tests and %s during the overlay tests: %s.\n",
			fp.Iface, FormatBytes(fp.OverlayBytes[ModeSlim]), FormatBytes(fp.OverlayBytes[ModeOverlay]), verdict)
	}
	fmt.Fprintf(b, "Goals for slim: %d of %d met", r.Goals.Met, r.Goals.Total)
	if r.Goals.Evaluated < r.Goals.Total {
		fmt.Fprintf(b, " (%d could not be evaluated)", r.Goals.Total-r.Goals.Evaluated)
	}
	b.WriteString(".\n")
	if len(r.Warnings) > 0 {
		b.WriteString("\nWarnings:\n\n")
		for _, w := range r.Warnings {
			fmt.Fprintf(b, "- %s\n", w)
		}
	}
}

// cell prints "median (min–max)", or "-" without values.
func cell(s Summary) string {
	if s.Runs == 0 {
		return "-"
	}
	if s.Runs == 1 {
		return FormatValue(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", FormatValue(s.Median), FormatValue(s.Min), FormatValue(s.Max))
}

func goalText(g *GoalResult) string {
	if g.Base == "" {
		if g.AtLeast > 0 {
			return fmt.Sprintf("≥ %s %s", formatBound(g.AtLeast), g.Unit)
		}
		return fmt.Sprintf("≤ %s %s", formatBound(g.AtMost), g.Unit)
	}
	if g.AtLeast > 0 {
		return fmt.Sprintf("≥ %s× %s", formatBound(g.AtLeast), g.Base)
	}
	return fmt.Sprintf("≤ %s× %s", formatBound(g.AtMost), g.Base)
}

// formatBound prints a goal's bound or a setting as short as it goes:
// 0.95, 0.8, 5.
func formatBound(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// FormatBytes prints a byte count with a decimal unit: 12.3 kB, 9.80 GB.
func FormatBytes(n uint64) string {
	units := []string{"B", "kB", "MB", "GB", "TB"}
	v, i := float64(n), 0
	for v >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return FormatValue(v) + " " + units[i]
}

// ReadJSON reads a report that WriteJSON wrote (slimctl bench -o json),
// to render it again without running the benchmark.
func ReadJSON(rd io.Reader) (*Report, error) {
	var r Report
	if err := json.NewDecoder(rd).Decode(&r); err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	if r.Schema != SchemaVersion {
		return nil, fmt.Errorf("read report: schema %d, want %d", r.Schema, SchemaVersion)
	}
	if len(r.Modes) == 0 {
		r.Modes = Modes
	}
	return &r, nil
}
