package bench

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/slimnet/slim/internal/bench/wire"
)

// Recorded from slimprobe over loopback.
const (
	rrOutput  = `{"mode":"rr","addr":"127.0.0.1:17201","size":1,"transactions":33053,"seconds":1.000002404,"tps":33052.92054077902,"p50Us":26.811,"p90Us":63.861,"p99Us":120.508,"meanUs":30.129320666807853,"minUs":16.612,"maxUs":3005.853,"cpuStart":{"user":149623,"nice":0,"system":84192,"idle":327057,"iowait":1597,"irq":0,"softirq":3904,"steal":0},"cpuEnd":{"user":149636,"nice":0,"system":84256,"idle":327139,"iowait":1597,"irq":0,"softirq":3942,"steal":0}}`
	crrOutput = `{"mode":"crr","addr":"127.0.0.1:17202","workers":4,"connections":13525,"errors":0,"seconds":1.000460352,"cps":13518.776604152727,"connect":{"p50Us":16.783,"p90Us":117.081,"p99Us":342.298,"meanUs":60.492317560073936,"minUs":9.949,"maxUs":10250.923},"transaction":{"p50Us":153.852,"p90Us":385.902,"p99Us":3810.316,"meanUs":295.3820048798521,"minUs":41.81,"maxUs":15316.798},"cpuStart":{"user":149636,"nice":0,"system":84257,"idle":327140,"iowait":1597,"irq":0,"softirq":3942,"steal":0},"cpuEnd":{"user":149662,"nice":0,"system":84364,"idle":327160,"iowait":1597,"irq":0,"softirq":3985,"steal":0}}`
)

func TestParseRR(t *testing.T) {
	r, err := ParseRR([]byte(rrOutput + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Transactions != 33053 || r.P50 != 26.811 || r.P99 != 120.508 || r.Size != 1 {
		t.Errorf("got %+v", r)
	}
	cpu, err := probeCPU(r.CPUStart, r.CPUEnd)
	if err != nil {
		t.Fatal(err)
	}
	// 13 user + 64 system + 38 softirq ticks
	if want := 1150 * time.Millisecond; cpu != want {
		t.Errorf("cpu %v, want %v", cpu, want)
	}
	for name, in := range map[string]string{
		"empty":           "",
		"crr output":      crrOutput,
		"no transactions": `{"mode":"rr","transactions":0,"seconds":1}`,
	} {
		if _, err := ParseRR([]byte(in)); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestParseCRR(t *testing.T) {
	r, err := ParseCRR([]byte(crrOutput))
	if err != nil {
		t.Fatal(err)
	}
	if r.Connections != 13525 || r.Workers != 4 || r.Connect.P50 != 16.783 || r.Connect.P99 != 342.298 || r.Transaction.P50 != 153.852 {
		t.Errorf("got %+v", r)
	}
	for name, in := range map[string]string{
		"empty":      "",
		"rr output":  rrOutput,
		"all failed": `{"mode":"crr","connections":0,"errors":5,"firstError":"connect: refused","seconds":1}`,
	} {
		if _, err := ParseCRR([]byte(in)); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
	if _, err := probeCPU(wire.CPUTimes{User: 1}, wire.CPUTimes{}); err == nil {
		t.Error("probeCPU without an end: want an error")
	}
}

// testdata/proc/4242/net/dev is h2's slimd's namespace.
func TestIfaceBytes(t *testing.T) {
	fs, err := procfs.NewFS("testdata/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pid   int
		iface string
		want  uint64
		err   error
	}{
		{4242, "slim-vxlan", 1234567 + 7654321, nil},
		{4242, "eth0", 88123456 + 77123456, nil},
		{4242, "wire", 0, ErrNoIface},
		{4243, "slim-vxlan", 0, os.ErrNotExist}, // slimd is gone
	} {
		t.Run(fmt.Sprint(tc.pid, tc.iface), func(t *testing.T) {
			got, err := ifaceBytes(fs, tc.pid, tc.iface)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Errorf("got %d, %v; want %d, %v", got, err, tc.want, tc.err)
			}
		})
	}
}
