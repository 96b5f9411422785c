package bench

import (
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestWriteCharts(t *testing.T) {
	dir := t.TempDir()
	if d := os.Getenv("SLIM_CHART_DIR"); d != "" {
		dir = d // to look at them
	}
	files, err := WriteCharts(sampleReport(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	want := []string{"bench-throughput.png", "bench-latency.png", "bench-setup.png", "bench-cpu.png", "bench-apps.png", "bench-cpuSides.png"}
	if !slices.Equal(names, want) {
		t.Fatalf("files %v, want %v", names, want)
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(fh)
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if cfg.Width < 300 || cfg.Height < 250 {
			t.Errorf("%s: %dx%d", f, cfg.Width, cfg.Height)
		}
	}
}

func TestWriteChartsEmpty(t *testing.T) {
	if _, err := WriteCharts(&Report{Modes: Modes}, t.TempDir()); err == nil {
		t.Error("a report without figures: want an error")
	}
}

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"nginx conn/request slimd CPU per request", 20, "nginx conn/request\nslimd CPU per\nrequest"},
		{"averyveryverylongword x", 5, "averyveryverylongword\nx"},
	} {
		if got := wrap(tc.in, tc.n); got != tc.want {
			t.Errorf("wrap(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
