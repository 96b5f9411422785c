package bench

import (
	"math"
	"slices"
	"testing"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name             string
		in               []float64
		median, min, max float64
		runs             int
	}{
		{"empty", nil, 0, 0, 0, 0},
		{"one", []float64{3}, 3, 3, 3, 1},
		{"odd", []float64{5, 1, 3}, 3, 1, 5, 3},
		{"even", []float64{4, 1, 3, 2}, 2.5, 1, 4, 4},
		{"five", []float64{10, 12, 9, 30, 11}, 11, 9, 30, 5},
		{"failed runs left out", []float64{2, math.NaN(), 4, math.Inf(1)}, 3, 2, 4, 2},
		{"all failed", []float64{math.NaN()}, 0, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			s := Summarize(in)
			if s.Median != tc.median || s.Min != tc.min || s.Max != tc.max || s.Runs != tc.runs {
				t.Errorf("Summarize(%v) = %+v, want median %v min %v max %v runs %d", tc.in, s, tc.median, tc.min, tc.max, tc.runs)
			}
			if len(s.Samples) != tc.runs {
				t.Errorf("samples %v, want %d of them", s.Samples, tc.runs)
			}
			for i := range in { // NaN != NaN: compare bits
				if math.Float64bits(in[i]) != math.Float64bits(tc.in[i]) {
					t.Errorf("input modified: %v", in)
				}
			}
		})
	}
}

func TestRatio(t *testing.T) {
	s := func(v float64) Summary { return Summarize([]float64{v}) }
	for _, tc := range []struct {
		name string
		a, b Summary
		want float64
		ok   bool
	}{
		{"plain", s(9), s(10), 0.9, true},
		{"above", s(15), s(10), 1.5, true},
		{"zero base", s(1), s(0), 0, false},
		{"no a", Summary{}, s(1), 0, false},
		{"no b", s(1), Summary{}, 0, false},
		{"zero a", s(0), s(2), 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Ratio(tc.a, tc.b)
			if ok != tc.ok || math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("Ratio = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, "0"},
		{11.73, "11.7"},
		{0.3421, "0.342"},
		{0.01234, "0.0123"},
		{123.4, "123"},
		{999.6, "1000"},
		{9.996, "10.0"},
		{99.96, "100"},
		{9751.3, "9751"},
		{123456, "123456"},
		{1, "1.00"},
		{-2.5, "-2.50"},
		{math.NaN(), "-"},
		{math.Inf(1), "-"},
	} {
		if got := FormatValue(tc.in); got != tc.want {
			t.Errorf("FormatValue(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
