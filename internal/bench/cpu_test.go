package bench

import (
	"strings"
	"testing"
	"time"
)

func TestParseCPULine(t *testing.T) {
	for _, tc := range []struct {
		name    string
		line    string
		want    CPUTimes
		wantErr bool
	}{
		{"kernel 6", "cpu  148688 0 83626 318169 1585 0 3890 7 11 0",
			CPUTimes{User: 148688, System: 83626, Idle: 318169, IOWait: 1585, SoftIRQ: 3890, Steal: 7}, false},
		{"old kernel, four fields", "cpu 10 20 30 40", CPUTimes{User: 10, Nice: 20, System: 30, Idle: 40}, false},
		{"per-cpu line", "cpu0 1 2 3 4 5 6 7 8", CPUTimes{}, true},
		{"too few", "cpu 1 2 3", CPUTimes{}, true},
		{"not a number", "cpu 1 2 x 4", CPUTimes{}, true},
		{"negative", "cpu 1 2 -3 4", CPUTimes{}, true},
		{"empty", "", CPUTimes{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCPULine(tc.line)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	in := "cpu  100 1 50 1000 5 2 3 4 0 0\ncpu0 50 0 25 500 2 1 1 2 0 0\nintr 12345\nctxt 999\n"
	got, err := ParseProcStat(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := CPUTimes{User: 100, Nice: 1, System: 50, Idle: 1000, IOWait: 5, IRQ: 2, SoftIRQ: 3, Steal: 4}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := ParseProcStat(strings.NewReader("intr 1\n")); err == nil {
		t.Error("no cpu line: want an error")
	}
}

func TestBusySince(t *testing.T) {
	a := CPUTimes{User: 100, Nice: 10, System: 50, Idle: 1000, IOWait: 7, IRQ: 1, SoftIRQ: 5, Steal: 3}
	b := CPUTimes{User: 150, Nice: 10, System: 80, Idle: 1100, IOWait: 9, IRQ: 2, SoftIRQ: 12, Steal: 9}
	// busy: 50 user + 30 system + 1 irq + 7 softirq = 88 ticks
	if got, want := b.BusySince(a), 880*time.Millisecond; got != want {
		t.Errorf("BusySince = %v, want %v", got, want)
	}
	if got := a.BusySince(b); got != 0 {
		t.Errorf("reversed BusySince = %v, want 0", got)
	}
	// total: 88 busy + 100 idle + 2 iowait + 6 steal = 196
	if got, want := b.UtilizationSince(a), 88.0/196; got != want {
		t.Errorf("UtilizationSince = %v, want %v", got, want)
	}
	if got := a.UtilizationSince(a); got != 0 {
		t.Errorf("empty window: %v, want 0", got)
	}
}

func TestReadCPUTimes(t *testing.T) {
	c, err := ReadCPUTimes()
	if err != nil {
		t.Skipf("no /proc/stat here: %v", err)
	}
	if c.totalTicks() == 0 {
		t.Errorf("no CPU time at all: %+v", c)
	}
}

func FuzzParseCPULine(f *testing.F) {
	f.Add("cpu  148688 0 83626 318169 1585 0 3890 0 0 0")
	f.Add("cpu 1 2 3 4")
	f.Add("cpu0 1 2 3 4")
	f.Fuzz(func(t *testing.T, line string) {
		c, err := ParseCPULine(line)
		if err != nil {
			return
		}
		if c.BusySince(c) != 0 {
			t.Errorf("busy time of an empty window: %v", c.BusySince(c))
		}
	})
}
