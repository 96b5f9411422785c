package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/testenv"
)

// sampleReport is a report as a 3-run benchmark could make it, with one
// failed slim rr run and one figure with a single run.
func sampleReport() *Report {
	s := Samples{}
	add := func(id string, host, overlay, slim []float64) {
		for _, v := range host {
			s.Add(id, ModeHost, v)
		}
		for _, v := range overlay {
			s.Add(id, ModeOverlay, v)
		}
		for _, v := range slim {
			s.Add(id, ModeSlim, v)
		}
	}
	add(FigTCP1Throughput, []float64{11.7, 11.2, 12.0}, []float64{4.75, 4.9, 4.6}, []float64{11.6, 11.9, 10.8})
	add(FigTCP4Throughput, []float64{13.1, 12.8, 13.5}, []float64{5.2, 5.0, 5.5}, []float64{12.2, 12.9, 12.4})
	add(FigRRP50, []float64{21.9, 22.5, 21.0}, []float64{28.8, 30.1, 29.0}, []float64{21.8, 22.9})
	add(FigRRP99, []float64{168, 150, 180}, []float64{222, 250, 210}, []float64{201, 190})
	add(FigRRRate, []float64{24984, 25100, 24000}, []float64{16800, 16000, 17000}, []float64{21970, 22500})
	add(FigCRRRate, []float64{9379, 9500, 9100}, []float64{9751, 9600, 9900}, []float64{3197, 3300, 3000})
	add(FigCRRConnectP50, []float64{20.3, 21, 19.5}, []float64{33.6, 34, 33}, []float64{897, 850, 920})
	add(FigCRRConnectP99, []float64{622}, []float64{720}, []float64{3677})
	add(FigCRR1Rate, []float64{5200, 5100, 5350}, []float64{4300, 4100, 4400}, []float64{3500, 3450, 3600})
	add(FigCRR1P50, []float64{150, 148, 160}, []float64{190, 185, 200}, []float64{240, 236, 251})
	add(FigCRR1P99, []float64{410, 400, 450}, []float64{520, 500, 530}, []float64{650, 600, 700})
	add(FigCRR1CPU, []float64{330, 320, 340}, []float64{400, 390, 420}, []float64{520, 510, 540})
	add(FigCRR1SlimdCPU, []float64{3, 2.5, 3.5}, []float64{3.2, 3, 3.3}, []float64{40, 38, 43})
	add(sideFigureID(FigCRR1CPU, sideClient), []float64{150, 148, 155}, []float64{170, 165, 175}, []float64{190, 185, 200})
	add(sideFigureID(FigCRR1CPU, sideServer), []float64{120, 118, 125}, []float64{140, 135, 150}, []float64{160, 150, 170})
	add(sideFigureID(FigCRR1CPU, sideSlimd), []float64{6, 5, 7}, []float64{6.5, 6, 7}, []float64{45, 43, 48})
	add(FigCRR1HandlerP50, nil, nil, []float64{12.5, 12.1, 13.4})
	add(FigCRR1HandlerP99, nil, nil, []float64{140, 120, 180})
	add(FigCRR1PolicyRatio, nil, []float64{0.99, 1.01}, []float64{0.97, 0.96, 0.99})
	add(FigCRR1ServiceRatio, nil, []float64{0.98}, []float64{0.99, 1.01, 0.98})
	add(FigTCP1CPU, []float64{0.171, 0.18, 0.165}, []float64{0.42, 0.45, 0.41}, []float64{0.174, 0.17, 0.18})
	add(FigTCP4CPU, []float64{0.16, 0.15, 0.17}, []float64{0.39, 0.4, 0.38}, []float64{0.162, 0.158, 0.17})
	add(FigRRCPU, []float64{58, 57, 60}, []float64{83, 80, 85}, []float64{61, 62})
	add(FigCRRCPU, []float64{190, 185, 200}, []float64{205, 200, 210}, []float64{560, 540, 600})
	add(FigCRRSlimdCPU, []float64{0, 0, 0.01}, []float64{0, 0.02, 0}, []float64{310, 300, 330})
	add(sideFigureID(FigCRRCPU, sideClient), []float64{80, 78, 85}, []float64{95, 90, 99}, []float64{120, 118, 125})
	add(sideFigureID(FigCRRCPU, sideServer), []float64{60, 58, 66}, []float64{70, 69, 72}, []float64{95, 90, 99})
	add(sideFigureID(FigTCP1CPU, sideClient), []float64{0.05, 0.05, 0.06}, []float64{0.11, 0.1, 0.12}, []float64{0.05, 0.05, 0.06})
	add(sideFigureID(FigTCP1CPU, sideServer), []float64{0.09, 0.08, 0.1}, []float64{0.2, 0.19, 0.21}, []float64{0.09, 0.09, 0.1})
	add(sideFigureID(FigTCP1CPU, sideSlimd), []float64{0, 0, 0}, []float64{0, 0, 0}, []float64{0.0001, 0, 0.0002})
	add(FigMemcachedRate, []float64{41000, 40200, 42100}, []float64{30500, 29900, 31000}, []float64{40100, 39000, 41500})
	add(FigMemcachedP50, []float64{27.1, 26.5, 28}, []float64{39.8, 38, 41}, []float64{28.3, 27.5, 29})
	add(FigMemcachedP99, []float64{250, 240, 300}, []float64{320, 300, 350}, []float64{260, 255, 290})
	add(FigMemcachedCPU, []float64{45, 44, 47}, []float64{64, 62, 66}, []float64{46, 45, 48})
	add(FigNginxRate, []float64{24000, 23500, 25000}, []float64{18000, 17500, 18600}, []float64{23200, 22800, 24100})
	add(FigNginxP50, []float64{1110, 1090, 1200}, []float64{1500, 1450, 1580}, []float64{1150, 1100, 1200})
	add(FigNginxP99, []float64{5250, 5000, 5600}, []float64{6100, 6000, 6400}, []float64{5400, 5100, 5900})
	add(FigNginxCPU, []float64{80, 78, 83}, []float64{105, 101, 108}, []float64{82, 80, 85})
	add(FigNginxCloseRate, []float64{12100, 11800, 12400}, []float64{9800, 9500, 10100}, []float64{3100, 3000, 3250})
	add(FigNginxCloseP50, []float64{2080, 2000, 2150}, []float64{2600, 2500, 2700}, []float64{9800, 9500, 10200})
	add(FigNginxCloseP99, []float64{14670, 14000, 15000}, []float64{16000, 15500, 17000}, []float64{30000, 28000, 33000})
	add(FigNginxCloseCPU, []float64{160, 155, 166}, []float64{200, 195, 210}, []float64{620, 600, 650})
	add(FigNginxCloseSlimd, []float64{0, 0, 0}, []float64{0, 0.01, 0}, []float64{330, 320, 345})
	add(FigPgbenchRate, []float64{27000, 26500, 27500}, []float64{21000, 20500, 21800}, []float64{26300, 26000, 27100})
	add(FigPgbenchLatency, []float64{147, 145, 150}, []float64{190, 183, 195}, []float64{152, 148, 154})
	add(FigPgbenchCPU, []float64{73, 72, 75}, []float64{95, 93, 98}, []float64{75, 74, 77})
	add(FigRedisSetRate, []float64{44583, 44000, 45000}, []float64{32000, 31000, 33000}, []float64{43000, 42000, 44500})
	add(FigRedisGetRate, []float64{46189, 45500, 47000}, []float64{33000, 32500, 34000}, []float64{44800, 44000, 46000})
	add(FigRedisGetP50, []float64{519, 500, 530}, []float64{700, 690, 720}, []float64{535, 520, 550})
	add(FigRedisGetP99, []float64{1623, 1500, 1700}, []float64{2000, 1900, 2100}, []float64{1680, 1600, 1800})
	add(FigRedisCPU, []float64{44, 43, 45}, []float64{61, 60, 63}, []float64{45, 44, 46})
	figs, goals := s.Figures(Tests)
	r := &Report{
		Schema:  SchemaVersion,
		Started: time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC),
		Seconds: 431.5,
		Machine: Machine{Kernel: "6.18.44-fc-v782", CPUModel: "AMD EPYC", CPUs: 2, Hosts: 2},
		Settings: Settings{Runs: 3, TCPSeconds: 8, RRSeconds: 5, RRSize: 1, CRRSeconds: 5, CRRWorkers: 4, Tests: Tests,
			CRR1: &CRR1Settings{Seconds: 5, Compiler: "cc (Debian 12.2.0-14+deb12u1) 12.2.0", Static: true, TWReuse: true},
			Apps: &AppSettings{Seconds: 3, MemcachedConns: 2, MemcachedKeys: 1000, MemcachedValueSize: 64, MemcachedRatio: "1:10",
				WrkThreads: 2, WrkConns: 32, PgbenchClients: 4, PgbenchThreads: 2, PgbenchScale: 1, RedisClients: 50, RedisRequests: 66000}},
		Modes:   Modes,
		Figures: figs,
		FastPath: FastPath{Iface: "slim-vxlan", Checked: true,
			OverlayBytes: map[string]uint64{ModeHost: 0, ModeOverlay: 9_812_345_678, ModeSlim: 12_345}},
		Goals:    goals,
		Warnings: []string{"run 2, slim, rr: slimprobe: connect 10.244.0.1:7201: connection refused"},
	}
	r.FastPath.judge()
	return r
}

func TestMarkdownGolden(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	testenv.Golden(t, "report.md", b.Bytes())
}

func TestJSONGolden(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	testenv.Golden(t, "report.json", b.Bytes())
	// The contract: these keys stay.
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema", "started", "seconds", "machine", "settings", "modes", "figures", "fastPath", "goals", "warnings"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lost key %q", k)
		}
	}
	// ReadJSON gives the same report back (slimctl bench --from).
	back, err := ReadJSON(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := back.WriteJSON(&again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), b.Bytes()) {
		t.Error("ReadJSON then WriteJSON changed the report")
	}
	if _, err := ReadJSON(strings.NewReader(`{"schema":2}`)); err == nil {
		t.Error("ReadJSON took schema 2")
	}
}

func TestFiguresAndGoals(t *testing.T) {
	r := sampleReport()
	byID := map[string]Figure{}
	for _, f := range r.Figures {
		byID[f.ID] = f
	}
	if len(byID) != len(figureDefs) {
		t.Fatalf("%d figures, want %d", len(byID), len(figureDefs))
	}
	for _, tc := range []struct {
		id        string
		met       bool
		evaluated bool
		hasGoal   bool
	}{
		{FigTCP1Throughput, true, true, true},  // 11.6/11.7 = 0.991
		{FigTCP4Throughput, false, true, true}, // 12.4/13.1 = 0.947
		{FigRRP50, true, true, true},           // 22.35/21.9 = 1.021
		{FigRRP99, false, true, true},          // 195.5/168 = 1.16
		{FigRRRate, false, false, false},
		{FigCRRRate, false, true, true}, // 3197/9751 = 0.33
		{FigTCP1CPU, true, true, true},  // 0.174/0.171 = 1.018
		{FigCRRCPU, false, true, true},
		{FigCRR1Rate, false, true, true},        // 3500/4300 = 0.81
		{FigCRR1P50, false, true, true},         // 240/190 = 1.26
		{FigCRR1P99, false, false, false},       //
		{FigCRR1SlimdCPU, false, true, true},    // 40 µs
		{FigCRR1HandlerP50, true, true, true},   // 12.5 µs
		{FigCRR1HandlerP99, false, true, true},  // 140 µs
		{FigCRR1PolicyRatio, true, true, true},  // 0.97
		{FigCRR1ServiceRatio, true, true, true}, // 0.99
	} {
		f := byID[tc.id]
		if (f.Goal != nil) != tc.hasGoal {
			t.Errorf("%s: goal %+v, want one: %v", tc.id, f.Goal, tc.hasGoal)
			continue
		}
		if f.Goal == nil {
			continue
		}
		if f.Goal.Met != tc.met || f.Goal.Evaluated != tc.evaluated {
			t.Errorf("%s: goal %+v, want met %v", tc.id, f.Goal, tc.met)
		}
	}
	if got := byID[FigRRP50].Results[ModeSlim]; got.Runs != 2 || got.Median != 22.35 {
		t.Errorf("slim rr p50 summary %+v", got)
	}
	// 16 on the core figures (7 of them crr1's), 24 on the
	// applications' (4 of them second goals: memcached's and redis's rates
	// against overlay, nginx's connection-per-request rate against
	// overlay's).
	if r.Goals.Total != 40 || r.Goals.Evaluated != 40 || r.Goals.Met != 26 {
		t.Errorf("goals %+v", r.Goals)
	}
	// A bound on slim's value, not a ratio: the handler exists only in
	// slim mode.
	hp := byID[FigCRR1HandlerP50]
	if g := hp.Goal; g.Base != "" || g.Value != 12.5 || g.Unit != "µs" || g.Text != "slim <= 15 µs" || len(hp.Ratios) != 0 {
		t.Errorf("handler p50: goal %+v, ratios %v", g, hp.Ratios)
	}
	if g := byID[FigCRR1SlimdCPU].Goal; g.Text != "slim <= 15 CPU µs/op" || g.Value != 40 {
		t.Errorf("slimd CPU goal %+v", g)
	}
	mc := byID[FigMemcachedRate]
	if mc.Goal == nil || len(mc.MoreGoals) != 1 || mc.MoreGoals[0].Base != ModeOverlay || !mc.MoreGoals[0].Met {
		t.Errorf("memcached rate goals: %+v %+v", mc.Goal, mc.MoreGoals)
	}
	if nc := byID[FigNginxCloseRate]; len(nc.Goals()) != 2 || nc.Goals()[1].Met {
		t.Errorf("nginx conn/request goals: %+v", nc.Goals())
	}
	if !r.FastPath.OnFastPath {
		t.Errorf("fast path check: %+v", r.FastPath)
	}
}

func TestGoalBounds(t *testing.T) {
	one := func(v float64) []float64 { return []float64{v} }
	for _, tc := range []struct {
		name      string
		g         *goal
		slim      float64
		met, eval bool
	}{
		{"at least, exactly", goalThroughput, 95, true, true},
		{"at least, below", goalThroughput, 94.9, false, true},
		{"at most, exactly", goalLatency, 105, true, true},
		{"at most, above", goalLatency, 105.1, false, true},
		{"no value", goalLatency, -1, false, false},
		// Bounds on slim's own value: 100 is host's.
		{"absolute at most, exactly", &goal{mode: ModeSlim, atMost: 15}, 15, true, true},
		{"absolute at most, above", &goal{mode: ModeSlim, atMost: 15}, 15.01, false, true},
		{"absolute at least, below", &goal{mode: ModeSlim, atLeast: 20}, 19, false, true},
		{"absolute, no value", &goal{mode: ModeSlim, atMost: 15}, -1, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Figure{Results: map[string]Summary{ModeHost: Summarize(one(100)), ModeOverlay: Summarize(one(100))}}
			if tc.slim >= 0 {
				f.Results[ModeSlim] = Summarize(one(tc.slim))
			}
			r := tc.g.evaluate(f)
			if r.Met != tc.met || r.Evaluated != tc.eval {
				t.Errorf("got %+v", r)
			}
		})
	}
}

func TestFiguresSubset(t *testing.T) {
	figs, gc := Samples{}.Figures([]string{TestRR})
	for _, f := range figs {
		if f.Test != TestRR {
			t.Errorf("figure %s of test %s in an rr-only run", f.ID, f.Test)
		}
	}
	// rr's four figures and its CPU figure's three sides.
	if len(figs) != 7 || gc.Total != 3 || gc.Evaluated != 0 {
		t.Errorf("%d figures, goals %+v", len(figs), gc)
	}
	var b strings.Builder
	r := &Report{Modes: Modes, Figures: figs, Goals: gc, FastPath: FastPath{Iface: "slim-vxlan"}}
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| - | - | - |") || !strings.Contains(b.String(), "not checked") {
		t.Errorf("empty figures should print dashes:\n%s", b.String())
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[uint64]string{0: "0 B", 999: "999 B", 12_345: "12.3 kB", 9_812_345_678: "9.81 GB", 1_000_000: "1.00 MB"} {
		if got := FormatBytes(in); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestSideFigures(t *testing.T) {
	want := map[string]string{
		sideFigureID(FigRRCPU, sideServer):   "rr.cpuPerTransaction.server",
		sideFigureID(FigTCP4CPU, sideClient): "tcp4.cpuPerGB.client",
		// The slimd shares measured before the other sides keep their IDs.
		sideFigureID(FigCRRCPU, sideSlimd):        FigCRRSlimdCPU,
		sideFigureID(FigNginxCloseCPU, sideSlimd): FigNginxCloseSlimd,
	}
	for got, w := range want {
		if got != w {
			t.Errorf("side figure ID %q, want %q", got, w)
		}
	}
	seen := map[string]bool{}
	cpuFigs := 0
	for _, d := range figureDefs {
		if seen[d.id] {
			t.Errorf("figure ID %s twice", d.id)
		}
		seen[d.id] = true
		if isCPUUnit(d.unit) && d.group != GroupCPUSides && !shareFigures[d.id] {
			cpuFigs++
		}
		if d.group == GroupCPUSides && (len(d.goals) > 0 || d.better != lower) {
			t.Errorf("side figure %s: goals %v, better %s", d.id, d.goals, d.better)
		}
	}
	for _, d := range figureDefs {
		if shareFigures[d.id] {
			for _, s := range []string{sideClient, sideServer, sideSlimd} {
				if seen[sideFigureID(d.id, s)] {
					t.Errorf("%s, a side's share, has a %s side", d.id, s)
				}
			}
			continue
		}
		if isCPUUnit(d.unit) && d.group != GroupCPUSides {
			for _, s := range []string{sideClient, sideServer, sideSlimd} {
				if !seen[sideFigureID(d.id, s)] {
					t.Errorf("%s has no %s side", d.id, s)
				}
			}
		}
	}
	if cpuFigs != 10 {
		t.Errorf("%d whole-machine CPU figures, want one per test (10)", cpuFigs)
	}
}

func TestAddSides(t *testing.T) {
	r := &runner{pr: lab.NewProgress(nil)}
	vals := []value{{id: FigRRP50, v: 20}, {id: FigRRCPU, v: 40, work: 1000}}
	r.sides = &sideCPU{client: 20 * time.Millisecond, server: 10 * time.Millisecond, slimd: time.Millisecond}
	got := map[string]float64{}
	for _, v := range r.addSides(TestRR, &env{mode: ModeSlim}, vals) {
		got[v.id] = v.v
	}
	// 20 ms over 1000 transactions: 20 µs each.
	for id, w := range map[string]float64{FigRRP50: 20, FigRRCPU: 40, "rr.cpuPerTransaction.client": 20,
		"rr.cpuPerTransaction.server": 10, "rr.cpuPerTransaction.slimd": 1} {
		if math.Abs(got[id]-w) > 1e-9 {
			t.Errorf("%s = %v, want %v", id, got[id], w)
		}
	}
	if len(got) != 5 {
		t.Errorf("values %v", got)
	}

	// Per GB: seconds.
	r.sides = &sideCPU{client: 500 * time.Millisecond, server: 2 * time.Second}
	got = map[string]float64{}
	for _, v := range r.addSides(TestTCP1, &env{mode: ModeHost}, []value{{id: FigTCP1CPU, v: 0.2, work: 10}}) {
		got[v.id] = v.v
	}
	if got["tcp1.cpuPerGB.client"] != 0.05 || got["tcp1.cpuPerGB.server"] != 0.2 {
		t.Errorf("tcp1 sides %v", got)
	}

	// Not measured: a warning, no side figures.
	r.sides, r.sidesErr = nil, errors.New("no cgroup")
	if out := r.addSides(TestRR, &env{mode: ModeSlim}, vals); len(out) != 2 || len(r.report.Warnings) != 1 {
		t.Errorf("values %v, warnings %v", out, r.report.Warnings)
	}
}

// Without --policies, crr1.policyRatio is not measured: no row, and its
// goal is not counted as one that could not be evaluated.
func TestOptionalFigureLeftOut(t *testing.T) {
	s := Samples{}
	s.Add(FigCRR1Rate, ModeSlim, 3000)
	figs, gc := s.Figures([]string{TestCRR1})
	for _, f := range figs {
		if f.ID == FigCRR1PolicyRatio {
			t.Errorf("figure %s present without samples", f.ID)
		}
	}
	s.Add(FigCRR1PolicyRatio, ModeSlim, 0.9)
	figs2, gc2 := s.Figures([]string{TestCRR1})
	if len(figs2) != len(figs)+1 || gc2.Total != gc.Total+1 || gc2.Met != gc.Met {
		t.Errorf("with a sample: %d figures (was %d), goals %+v (was %+v); want one more figure and one more goal, not met", len(figs2), len(figs), gc2, gc)
	}
}
