package main

import (
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		rc       int
		want     []string
	}{
		{"all passed", `{"Action":"output","Package":"q","Test":"TestX","Output":"hidden\n"}
{"Action":"pass","Package":"q","Test":"TestX"}
{"Action":"pass","Package":"q"}
{"Action":"skip","Package":"r"}`, 0, []string{"no test failed or skipped"}},
		{"skipped", `{"Action":"output","Package":"q","Test":"TestX","Output":"no root\n"}
{"Action":"skip","Package":"q","Test":"TestX"}`, 1, []string{"no root", "1 tests skipped", "q TestX"}},
		// A failed test fails its package too: reported once.
		{"failed test", `{"Action":"fail","Package":"q","Test":"TestX"}
{"Action":"fail","Package":"q"}`, 1, []string{"1 tests failed", "q TestX"}},
		// A package that panics in init fails with no failed test.
		{"package failed", `{"Action":"output","Package":"p","Output":"panic: flag redefined: update\n"}
{"Action":"fail","Package":"p"}`, 1, []string{"panic: flag redefined", "p (the package"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			if rc := run(strings.NewReader(tc.in), &out); rc != tc.rc {
				t.Errorf("rc %d, want %d\n%s", rc, tc.rc, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
