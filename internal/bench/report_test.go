package bench

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -run %s -update rewrites it):\n--- got\n%s\n--- want\n%s", name, t.Name(), got, want)
	}
}

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
	add(FigTCP1CPU, []float64{0.171, 0.18, 0.165}, []float64{0.42, 0.45, 0.41}, []float64{0.174, 0.17, 0.18})
	add(FigTCP4CPU, []float64{0.16, 0.15, 0.17}, []float64{0.39, 0.4, 0.38}, []float64{0.162, 0.158, 0.17})
	add(FigRRCPU, []float64{58, 57, 60}, []float64{83, 80, 85}, []float64{61, 62})
	add(FigCRRCPU, []float64{190, 185, 200}, []float64{205, 200, 210}, []float64{560, 540, 600})
	add(FigCRRSlimdCPU, []float64{0, 0, 0.01}, []float64{0, 0.02, 0}, []float64{310, 300, 330})
	figs, goals := s.Figures(Tests)
	r := &Report{
		Schema:   SchemaVersion,
		Started:  time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC),
		Seconds:  431.5,
		Machine:  Machine{Kernel: "6.18.44-fc-v782", CPUModel: "AMD EPYC", CPUs: 2, Hosts: 2},
		Settings: Settings{Runs: 3, TCPSeconds: 8, RRSeconds: 5, RRSize: 1, CRRSeconds: 5, CRRWorkers: 4},
		Modes:    Modes,
		Figures:  figs,
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
	golden(t, "report.md", b.Bytes())
}

func TestJSONGolden(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.json", b.Bytes())
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
	if r.Goals.Total != 9 || r.Goals.Evaluated != 9 {
		t.Errorf("goals %+v", r.Goals)
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
	if len(figs) != 4 || gc.Total != 3 || gc.Evaluated != 0 {
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
