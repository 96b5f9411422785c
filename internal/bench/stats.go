package bench

import (
	"math"
	"slices"
	"strconv"
)

// Summary is one figure of one mode over the runs.
type Summary struct {
	// Median, Min and Max of Samples; zero when there are none.
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// Runs is the number of samples (runs that produced a value).
	Runs int `json:"runs"`
	// Samples are the values in run order.
	Samples []float64 `json:"samples"`
}

// Summarize returns the median, min and max of samples. The median of an
// even number of samples is the mean of the middle two. NaN and infinite
// samples are left out (a failed run has no value).
func Summarize(samples []float64) Summary {
	s := Summary{Samples: []float64{}}
	var sorted []float64
	for _, v := range samples {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		s.Samples = append(s.Samples, v)
		sorted = append(sorted, v)
	}
	s.Runs = len(sorted)
	if s.Runs == 0 {
		return s
	}
	slices.Sort(sorted)
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	mid := len(sorted) / 2
	if len(sorted)%2 == 1 {
		s.Median = sorted[mid]
	} else {
		s.Median = (sorted[mid-1] + sorted[mid]) / 2
	}
	return s
}

// Ratio is a/b, and false when it is undefined (b is zero, either side has
// no value, or the result is not finite).
func Ratio(a, b Summary) (float64, bool) {
	if a.Runs == 0 || b.Runs == 0 || b.Median == 0 {
		return 0, false
	}
	r := a.Median / b.Median
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return 0, false
	}
	return r, true
}

// FormatValue prints v with three significant digits, without an
// exponent: 11.7, 0.342, 9751 (numbers of 1000 and more are printed whole).
func FormatValue(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "-"
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	}
	// Digits after the point for three significant digits.
	d := 2 - int(math.Floor(math.Log10(math.Abs(v))))
	// Rounding may carry into a new digit (9.996 -> 10.0): recompute.
	if r := math.Abs(roundTo(v, d)); r > 0 && 2-int(math.Floor(math.Log10(r))) < d {
		d--
	}
	d = max(d, 0)
	return strconv.FormatFloat(v, 'f', d, 64)
}

func roundTo(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
