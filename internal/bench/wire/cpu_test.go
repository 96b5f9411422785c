package wire

import (
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

func TestReadCPUTimes(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want CPUTimes
	}{
		// guest and guest_nice (7 8) are in user and nice already;
		// procfs's seconds come back as the kernel's whole ticks, also
		// past 32 bits.
		{"testdata/proc", CPUTimes{User: 1<<32 + 101, Nice: 1, System: 50, Idle: 1000, IOWait: 5, IRQ: 2, SoftIRQ: 3, Steal: 4}},
		// Before Linux 2.6 the line had four fields.
		{"testdata/oldkernel", CPUTimes{User: 10, Nice: 20, System: 30, Idle: 40}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			fs, err := procfs.NewFS(tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ReadCPUTimes(fs)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	fs, err := procfs.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCPUTimes(fs); err == nil {
		t.Error("no stat file: want an error")
	}
}

// The machine's own counters: they exist, and a second read is not
// behind the first.
func TestReadCPUTimesHere(t *testing.T) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	a, err := ReadCPUTimes(fs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ReadCPUTimes(fs)
	if err != nil {
		t.Fatal(err)
	}
	if a.busyTicks()+a.Idle == 0 || b.busyTicks() < a.busyTicks() {
		t.Errorf("first %+v, then %+v", a, b)
	}
}

func TestBusySince(t *testing.T) {
	a := CPUTimes{User: 100, Nice: 10, System: 50, Idle: 1000, IOWait: 7, IRQ: 1, SoftIRQ: 5, Steal: 3}
	b := CPUTimes{User: 150, Nice: 10, System: 80, Idle: 1100, IOWait: 9, IRQ: 2, SoftIRQ: 12, Steal: 9}
	// busy: 50 user + 30 system + 1 irq + 7 softirq = 88 ticks; idle,
	// iowait and steal are not work.
	if got, want := b.BusySince(a), 880*time.Millisecond; got != want {
		t.Errorf("BusySince = %v, want %v", got, want)
	}
	if got := a.BusySince(b); got != 0 {
		t.Errorf("reversed BusySince = %v, want 0", got)
	}
	if got := a.BusySince(a); got != 0 {
		t.Errorf("empty window: %v, want 0", got)
	}
}
