package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseCgroupCPUStat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"no controller", "usage_usec 1871065\nuser_usec 874666\nsystem_usec 996398\nnice_usec 0\n", 1871065 * time.Microsecond, false},
		{"cpu controller", "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n", 5 * time.Microsecond, false},
		{"missing", "user_usec 3\n", 0, true},
		{"garbage", "usage_usec x\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCgroupCPUStat(strings.NewReader(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("got %v, %v; want %v (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestCgroupsCPU(t *testing.T) {
	dir := t.TempDir()
	var cgs []string
	for i, s := range []string{"usage_usec 100\n", "usage_usec 250\nuser_usec 1\n"} {
		cg := filepath.Join(dir, string(rune('a'+i)))
		if err := os.Mkdir(cg, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cg, "cpu.stat"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		cgs = append(cgs, cg)
	}
	if got, err := CgroupsCPU(cgs); err != nil || got != 350*time.Microsecond {
		t.Errorf("CgroupsCPU = %v, %v", got, err)
	}
	if _, err := CgroupsCPU(append(cgs, filepath.Join(dir, "gone"))); err == nil {
		t.Error("missing cgroup: want an error")
	}
}
