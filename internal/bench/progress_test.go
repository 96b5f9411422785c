package bench

import "testing"

func TestStripElapsed(t *testing.T) {
	for in, want := range map[string]string{
		"   0.9s  lab ready: 2 hosts":   "lab ready: 2 hosts",
		"  12.0s  warning: x":           "warning: x",
		"no time here":                  "no time here",
		"5s":                            "5s",
		"sleeps  are not elapsed times": "sleeps  are not elapsed times",
	} {
		if got := stripElapsed(in); got != want {
			t.Errorf("stripElapsed(%q) = %q, want %q", in, got, want)
		}
	}
}
