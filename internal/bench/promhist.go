package bench

// A Prometheus histogram read from the text exposition format, for the
// broker's handler times that crr1 reports: a small parser of its own,
// so that slimctl does not pull in the Prometheus libraries for one
// histogram. Bucket bounds are read from the `le` labels; nothing assumes
// what they are.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Histogram is a Prometheus histogram's cumulative buckets: Counts[i]
// observations were at most Bounds[i]. Bounds ascend and the last is
// +Inf (the total count); an empty Histogram has had no observation.
type Histogram struct {
	Bounds []float64
	Counts []float64
}

// Total is the number of observations.
func (h Histogram) Total() float64 {
	if len(h.Counts) == 0 {
		return 0
	}
	return h.Counts[len(h.Counts)-1]
}

// ErrMetricSyntax means a line of the exposition could not be parsed.
var ErrMetricSyntax = errors.New("metrics: bad line")

// ParseHistogram reads the buckets of histogram name (without _bucket)
// whose labels include match (le aside) from a text exposition. A series
// that is not there yet (a labelled histogram is created by its first
// observation) is an empty Histogram.
func ParseHistogram(r io.Reader, name string, match map[string]string) (Histogram, error) {
	type bucket struct{ le, n float64 }
	var bs []bucket
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, name+"_bucket") {
			continue
		}
		n, labels, v, err := parseSample(line)
		if err != nil {
			return Histogram{}, fmt.Errorf("line %d: %w", ln, err)
		}
		if n != name+"_bucket" || !matches(labels, match) {
			continue
		}
		le, ok := labels["le"]
		if !ok {
			return Histogram{}, fmt.Errorf("line %d: %w: bucket without le", ln, ErrMetricSyntax)
		}
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil || math.IsNaN(bound) || math.IsInf(bound, -1) {
			return Histogram{}, fmt.Errorf("line %d: %w: le %q", ln, ErrMetricSyntax, le)
		}
		bs = append(bs, bucket{bound, v})
	}
	if err := sc.Err(); err != nil {
		return Histogram{}, fmt.Errorf("read metrics: %w", err)
	}
	if len(bs) == 0 {
		return Histogram{}, nil
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmpFloat(a.le, b.le) })
	var h Histogram
	for i, b := range bs {
		if i > 0 && b.le == bs[i-1].le {
			return Histogram{}, fmt.Errorf("%s: bucket le=%g twice (labels not told apart?)", name, b.le)
		}
		h.Bounds = append(h.Bounds, b.le)
		h.Counts = append(h.Counts, b.n)
	}
	if !math.IsInf(h.Bounds[len(h.Bounds)-1], 1) {
		return Histogram{}, fmt.Errorf("%s: no +Inf bucket", name)
	}
	return h, h.check()
}

// SumCounter sums every sample of metric name (any labels) in a text
// exposition.
func SumCounter(r io.Reader, name string) (float64, error) {
	var sum float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, name) {
			continue
		}
		n, _, v, err := parseSample(line)
		if err != nil {
			return 0, fmt.Errorf("line %d: %w", ln, err)
		}
		if n == name {
			sum += v
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read metrics: %w", err)
	}
	return sum, nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// matches reports whether labels has every label of want.
func matches(labels, want map[string]string) bool {
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// check verifies that the counts are cumulative: finite, non-negative,
// never decreasing.
func (h Histogram) check() error {
	for i, c := range h.Counts {
		if c < 0 || math.IsNaN(c) || math.IsInf(c, 0) {
			return fmt.Errorf("histogram: bucket le=%g count %g", h.Bounds[i], c)
		}
		if i > 0 && c < h.Counts[i-1] {
			return fmt.Errorf("histogram: bucket le=%g count %g below le=%g's %g", h.Bounds[i], c, h.Bounds[i-1], h.Counts[i-1])
		}
	}
	return nil
}

// Sub is the histogram of the observations made between before and h,
// two scrapes of the same series. before may be empty (the series did not
// exist yet); otherwise both must have the same bounds and no count may
// have gone down (a restarted process would start again from zero).
func (h Histogram) Sub(before Histogram) (Histogram, error) {
	if len(before.Bounds) == 0 {
		return h, nil
	}
	if !slices.Equal(h.Bounds, before.Bounds) {
		return Histogram{}, fmt.Errorf("histogram: bucket bounds changed between scrapes (%v, then %v): the process restarted?", before.Bounds, h.Bounds)
	}
	d := Histogram{Bounds: slices.Clone(h.Bounds), Counts: make([]float64, len(h.Counts))}
	for i := range h.Counts {
		d.Counts[i] = h.Counts[i] - before.Counts[i]
		if d.Counts[i] < 0 {
			return Histogram{}, fmt.Errorf("histogram: bucket le=%g went down from %g to %g: the process restarted?", h.Bounds[i], before.Counts[i], h.Counts[i])
		}
	}
	return d, d.check()
}

// Quantile estimates the q-quantile (0 < q < 1) as Prometheus's
// histogram_quantile does: find the bucket holding the q*Total-th
// observation and interpolate linearly between its bounds (the first
// bucket's lower bound is 0 if its upper bound is positive). An
// observation in the +Inf bucket gives the largest finite bound. It is
// false without observations.
func (h Histogram) Quantile(q float64) (float64, bool) {
	total := h.Total()
	if total <= 0 || !(q > 0 && q < 1) || len(h.Bounds) != len(h.Counts) {
		return 0, false
	}
	rank := q * total
	b, _ := slices.BinarySearchFunc(h.Counts, rank, cmpFloat) // first count >= rank
	if b >= len(h.Counts) {
		b = len(h.Counts) - 1
	}
	if math.IsInf(h.Bounds[b], 1) {
		if b == 0 {
			return 0, false // only a +Inf bucket: no bound to report
		}
		return h.Bounds[b-1], true
	}
	lo, below := 0.0, 0.0
	if b > 0 {
		lo, below = h.Bounds[b-1], h.Counts[b-1]
	} else if h.Bounds[0] <= 0 {
		return h.Bounds[0], true
	}
	hi, in := h.Bounds[b], h.Counts[b]-below
	v := lo + (hi-lo)*(rank-below)/in
	if in <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return hi, true // bounds too far apart for float64
	}
	return v, true
}

// parseSample parses one sample line of the text format:
//
//	name{label="value",...} value [timestamp]
//
// Label values may hold \\, \" and \n escapes.
func parseSample(line string) (string, map[string]string, float64, error) {
	bad := func(why string) (string, map[string]string, float64, error) {
		return "", nil, 0, fmt.Errorf("%w: %s: %q", ErrMetricSyntax, why, trim(line, 120))
	}
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return bad("no value")
	}
	name, rest := line[:i], line[i:]
	labels := map[string]string{}
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " \t")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq <= 0 {
				return bad("label without =")
			}
			key := strings.TrimSpace(rest[:eq])
			rest = strings.TrimLeft(rest[eq+1:], " \t")
			if !strings.HasPrefix(rest, `"`) {
				return bad("label value not quoted")
			}
			val, n, ok := unquoteLabel(rest)
			if !ok {
				return bad("label value not terminated")
			}
			labels[key] = val
			rest = strings.TrimLeft(rest[n:], " \t")
			switch {
			case strings.HasPrefix(rest, ","):
				rest = rest[1:]
			case strings.HasPrefix(rest, "}"):
			default:
				return bad("labels not separated")
			}
		}
	}
	f := strings.Fields(rest)
	if len(f) < 1 || len(f) > 2 {
		return bad("want a value and at most a timestamp")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return bad("value")
	}
	return name, labels, v, nil
}

// unquoteLabel reads the quoted label value at the start of s; it returns
// the value and the length of its quoted form.
func unquoteLabel(s string) (string, int, bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), i + 1, true
		case '\\':
			if i+1 >= len(s) {
				return "", 0, false
			}
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			default: // \\ and \"
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, false
}
