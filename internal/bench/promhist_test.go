package bench

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

// handlerScrape is a slimd /metrics page as client_golang writes it (the
// broker's histograms, abridged), with counts scaled by k.
const handlerScrape = `# HELP slim_broker_handler_seconds Broker handler time of a swapped call.
# TYPE slim_broker_handler_seconds histogram
slim_broker_handler_seconds_bucket{op="connect",le="5e-06"} 0
slim_broker_handler_seconds_bucket{op="connect",le="1e-05"} 2
slim_broker_handler_seconds_bucket{op="connect",le="2e-05"} 10
slim_broker_handler_seconds_bucket{op="connect",le="4e-05"} 90
slim_broker_handler_seconds_bucket{op="connect",le="8e-05"} 99
slim_broker_handler_seconds_bucket{op="connect",le="+Inf"} 100
slim_broker_handler_seconds_sum{op="connect"} 0.0031
slim_broker_handler_seconds_count{op="connect"} 100
slim_broker_handler_seconds_bucket{op="listen",le="5e-06"} 0
slim_broker_handler_seconds_bucket{op="listen",le="1e-05"} 0
slim_broker_handler_seconds_bucket{op="listen",le="2e-05"} 0
slim_broker_handler_seconds_bucket{op="listen",le="4e-05"} 0
slim_broker_handler_seconds_bucket{op="listen",le="8e-05"} 3
slim_broker_handler_seconds_bucket{op="listen",le="+Inf"} 3
slim_broker_handler_seconds_sum{op="listen"} 0.0002
slim_broker_handler_seconds_count{op="listen"} 3
# HELP slim_broker_step_seconds Broker handler time by step.
# TYPE slim_broker_step_seconds histogram
slim_broker_step_seconds_bucket{step="answer",le="5e-06"} 7
slim_broker_step_seconds_bucket{step="answer",le="+Inf"} 9
`

var connectOp = map[string]string{"op": "connect"}

func TestParseHistogram(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         string
		wantBounds []float64
		wantCounts []float64
		wantErr    bool
	}{
		{name: "client_golang", in: handlerScrape,
			wantBounds: []float64{5e-6, 1e-5, 2e-5, 4e-5, 8e-5, math.Inf(1)}, wantCounts: []float64{0, 2, 10, 90, 99, 100}},
		{name: "no connect yet", in: "slim_broker_handler_seconds_bucket{op=\"listen\",le=\"+Inf\"} 3\n"},
		{name: "empty", in: ""},
		// Finer bounds, other label order, spaces, a timestamp, an
		// escaped label value and out-of-order lines.
		{name: "any bounds and layout", in: `slim_broker_handler_seconds_bucket{le="+Inf",op="connect"} 7 1700000000000
slim_broker_handler_seconds_bucket{ le = "2.5e-06" , op="connect", note="a \"b\" \\ c\n"} 1
slim_broker_handler_seconds_bucket{op="connect",le="1e-06",} 0
slim_broker_handler_seconds_bucket{op="connect",le="0.00075"} 6
`, wantBounds: []float64{1e-6, 2.5e-6, 0.00075, math.Inf(1)}, wantCounts: []float64{0, 1, 6, 7}},
		{name: "prefix of another metric", in: "slim_broker_handler_seconds_bucket_total{op=\"connect\",le=\"1\"} 5\n"},
		{name: "no +Inf", in: "slim_broker_handler_seconds_bucket{op=\"connect\",le=\"1\"} 5\n", wantErr: true},
		{name: "no le", in: "slim_broker_handler_seconds_bucket{op=\"connect\"} 5\n", wantErr: true},
		{name: "-Inf le", in: "slim_broker_handler_seconds_bucket{op=\"connect\",le=\"-Inf\"} 0\n", wantErr: true},
		{name: "bad le", in: "slim_broker_handler_seconds_bucket{op=\"connect\",le=\"x\"} 5\n", wantErr: true},
		{name: "bad value", in: "slim_broker_handler_seconds_bucket{op=\"connect\",le=\"+Inf\"} many\n", wantErr: true},
		{name: "unterminated", in: "slim_broker_handler_seconds_bucket{op=\"connect,le=\"+Inf\"} 5\n", wantErr: true},
		{name: "not cumulative", in: "slim_broker_handler_seconds_bucket{op=\"connect\",le=\"1\"} 5\n" +
			"slim_broker_handler_seconds_bucket{op=\"connect\",le=\"+Inf\"} 4\n", wantErr: true},
		{name: "duplicate bucket", in: "slim_broker_handler_seconds_bucket{op=\"connect\",le=\"+Inf\"} 5\n" +
			"slim_broker_handler_seconds_bucket{op=\"connect\",le=\"+Inf\"} 5\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHistogram(strings.NewReader(tc.in), handlerMetric, connectOp)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want one: %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if !slices.Equal(h.Bounds, tc.wantBounds) || !slices.Equal(h.Counts, tc.wantCounts) {
				t.Errorf("got %v %v, want %v %v", h.Bounds, h.Counts, tc.wantBounds, tc.wantCounts)
			}
		})
	}
}

func TestParseSample(t *testing.T) {
	name, labels, v, err := parseSample(`m{a="x\"y",b="\\",c="l\n2"} -Inf`)
	if err != nil || name != "m" || labels["a"] != `x"y` || labels["b"] != `\` || labels["c"] != "l\n2" || !math.IsInf(v, -1) {
		t.Errorf("got %q %q %v %v", name, labels, v, err)
	}
	name, labels, v, err = parseSample("up 1")
	if err != nil || name != "up" || len(labels) != 0 || v != 1 {
		t.Errorf("got %q %q %v %v", name, labels, v, err)
	}
	for _, bad := range []string{"m", "{a=\"b\"} 1", "m{a} 1", "m{a=b} 1", "m{a=\"b\" c=\"d\"} 1", "m 1 2 3", `m{a="b\`} {
		if _, _, _, err := parseSample(bad); !errors.Is(err, ErrMetricSyntax) {
			t.Errorf("%q: error %v, want ErrMetricSyntax", bad, err)
		}
	}
}

func hist(counts ...float64) Histogram {
	return Histogram{Bounds: []float64{10, 20, 40, math.Inf(1)}, Counts: counts}
}

func TestHistogramSub(t *testing.T) {
	for _, tc := range []struct {
		name          string
		after, before Histogram
		want          []float64
		wantErr       bool
	}{
		{"delta", hist(5, 10, 20, 21), hist(1, 2, 3, 3), []float64{4, 8, 17, 18}, false},
		{"no series before", hist(5, 10, 20, 21), Histogram{}, []float64{5, 10, 20, 21}, false},
		{"nothing new", hist(1, 2, 3, 3), hist(1, 2, 3, 3), []float64{0, 0, 0, 0}, false},
		{"restarted: went down", hist(1, 1, 1, 1), hist(1, 2, 3, 3), nil, true},
		{"restarted: other bounds", Histogram{Bounds: []float64{5, math.Inf(1)}, Counts: []float64{1, 2}}, hist(1, 2, 3, 3), nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := tc.after.Sub(tc.before)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want one: %v", err, tc.wantErr)
			}
			if err == nil && !slices.Equal(d.Counts, tc.want) {
				t.Errorf("counts %v, want %v", d.Counts, tc.want)
			}
		})
	}
}

func TestHistogramQuantile(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    Histogram
		q    float64
		want float64
		ok   bool
	}{
		// 100 observations: 10 up to 10, 40 in (10,20], 50 in (20,40].
		// p50: rank 50, the end of (10,20].
		{"p50 at a bucket's end", hist(10, 50, 100, 100), 0.5, 20, true},
		// p30: rank 30, half way into (10,20]'s 40.
		{"interpolated", hist(10, 50, 100, 100), 0.3, 15, true},
		// p99: rank 99, 49 of (20,40]'s 50: 20 + 20*49/50.
		{"p99", hist(10, 50, 100, 100), 0.99, 39.6, true},
		// p5: rank 5 in the first bucket, from 0 to 10.
		{"first bucket from zero", hist(10, 50, 100, 100), 0.05, 5, true},
		// p99 in +Inf: the largest finite bound.
		{"beyond the last bound", hist(10, 20, 30, 100), 0.99, 40, true},
		// Empty buckets before the one that holds the rank.
		{"skips empty buckets", hist(0, 0, 4, 4), 0.5, 30, true},
		{"no observations", hist(0, 0, 0, 0), 0.5, 0, false},
		{"empty", Histogram{}, 0.5, 0, false},
		{"q out of range", hist(10, 50, 100, 100), 1, 0, false},
		{"only +Inf", Histogram{Bounds: []float64{math.Inf(1)}, Counts: []float64{3}}, 0.5, 0, false},
		{"one observation", hist(0, 1, 1, 1), 0.5, 15, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.h.Quantile(tc.q)
			if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("Quantile(%v) = %v, %v; want %v, %v", tc.q, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestHandlerRun(t *testing.T) {
	before, err := ParseHistogram(strings.NewReader(handlerScrape), handlerMetric, connectOp)
	if err != nil {
		t.Fatal(err)
	}
	after := Histogram{Bounds: before.Bounds, Counts: []float64{0, 2, 10, 190, 199, 200}}
	h, err := handlerRun(before, after, nil)
	if err != nil || h.Total() != 100 {
		t.Fatalf("got %v, %v", h, err)
	}
	// All 100 in (20,40] µs: p50 30 µs.
	if p50, ok := h.Quantile(0.5); !ok || math.Abs(p50-30e-6) > 1e-12 {
		t.Errorf("p50 %v %v", p50, ok)
	}
	if _, err := handlerRun(before, before, nil); err == nil {
		t.Error("no connect in the run: want an error")
	}
	if _, err := handlerRun(before, after, errors.New("scrape failed")); err == nil {
		t.Error("a failed scrape: want an error")
	}
}

func FuzzParseHistogram(f *testing.F) {
	f.Add(handlerScrape)
	f.Add("slim_broker_handler_seconds_bucket{op=\"connect\",le=\"+Inf\"} 1\n")
	f.Add("slim_broker_handler_seconds_bucket{op=\"connect\",le=\"1\",x=\"\\\"\"} 1e3 12\n")
	f.Fuzz(func(t *testing.T, in string) {
		h, err := ParseHistogram(strings.NewReader(in), handlerMetric, connectOp)
		if err != nil {
			return
		}
		if len(h.Bounds) != len(h.Counts) {
			t.Fatalf("bounds %v, counts %v", h.Bounds, h.Counts)
		}
		if len(h.Bounds) > 0 && (!math.IsInf(h.Bounds[len(h.Bounds)-1], 1) || !slices.IsSorted(h.Bounds)) {
			t.Fatalf("bounds %v", h.Bounds)
		}
		for _, q := range []float64{0.01, 0.5, 0.99} {
			if v, ok := h.Quantile(q); ok && (math.IsNaN(v) || math.IsInf(v, 0)) {
				t.Fatalf("Quantile(%v) = %v of %v %v", q, v, h.Bounds, h.Counts)
			}
		}
	})
}

func TestSumCounter(t *testing.T) {
	page := handlerScrape + "grpc_server_msg_received_total{grpc_method=\"Range\"} 5\ngrpc_server_msg_received_total{grpc_method=\"LeaseKeepAlive\"} 7.5\n"
	got, err := SumCounter(strings.NewReader(page), "slim_broker_handler_seconds_count")
	if err != nil || got != 103 {
		t.Errorf("handler counts: %v %v, want 103", got, err)
	}
	got, err = SumCounter(strings.NewReader(page), "grpc_server_msg_received_total")
	if err != nil || got != 12.5 {
		t.Errorf("grpc messages: %v %v, want 12.5", got, err)
	}
	if _, err := SumCounter(strings.NewReader("x_total{a=\"1\" 3\n"), "x_total"); err == nil {
		t.Error("malformed sample accepted")
	}
}
