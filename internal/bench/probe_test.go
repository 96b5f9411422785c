package bench

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Recorded from slimprobe over loopback.
const (
	rrOutput  = `{"mode":"rr","addr":"127.0.0.1:17201","size":1,"transactions":33053,"seconds":1.000002404,"tps":33052.92054077902,"p50Us":26.811,"p90Us":63.861,"p99Us":120.508,"meanUs":30.129320666807853,"minUs":16.612,"maxUs":3005.853,"cpuStatStart":"cpu  149623 0 84192 327057 1597 0 3904 0 0 0","cpuStatEnd":"cpu  149636 0 84256 327139 1597 0 3942 0 0 0"}`
	crrOutput = `{"mode":"crr","addr":"127.0.0.1:17202","workers":4,"connections":13525,"errors":0,"seconds":1.000460352,"cps":13518.776604152727,"connect":{"p50Us":16.783,"p90Us":117.081,"p99Us":342.298,"meanUs":60.492317560073936,"minUs":9.949,"maxUs":10250.923},"transaction":{"p50Us":153.852,"p90Us":385.902,"p99Us":3810.316,"meanUs":295.3820048798521,"minUs":41.81,"maxUs":15316.798},"cpuStatStart":"cpu  149636 0 84257 327140 1597 0 3942 0 0 0","cpuStatEnd":"cpu  149662 0 84364 327160 1597 0 3985 0 0 0"}`
)

func TestParseRR(t *testing.T) {
	r, err := ParseRR([]byte(rrOutput + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Transactions != 33053 || r.P50 != 26.811 || r.P99 != 120.508 || r.Size != 1 {
		t.Errorf("got %+v", r)
	}
	cpu, err := probeCPU(r.CPUStatStart, r.CPUStatEnd)
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
	if _, err := probeCPU("cpu 1 2 3 4", "garbage"); err == nil {
		t.Error("probeCPU of garbage: want an error")
	}
}

const netDev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    5432      60    0    0    0     0          0         0     5432      60    0    0    0     0       0          0
  eth0: 88123456  70000    0    0    0     0          0         0 77123456   60000    0    0    0     0       0          0
slim-vxlan:1234567    890    0    0    0     0          0         0  7654321    4321    0    0    0     0       0          0
`

func TestParseNetDev(t *testing.T) {
	for _, tc := range []struct {
		iface string
		want  IfaceCounters
		err   error
	}{
		{"slim-vxlan", IfaceCounters{RxBytes: 1234567, RxPackets: 890, TxBytes: 7654321, TxPackets: 4321}, nil},
		{"eth0", IfaceCounters{RxBytes: 88123456, RxPackets: 70000, TxBytes: 77123456, TxPackets: 60000}, nil},
		{"wire", IfaceCounters{}, ErrNoIface},
	} {
		t.Run(tc.iface, func(t *testing.T) {
			got, err := ParseNetDev(strings.NewReader(netDev), tc.iface)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Errorf("got %+v, %v; want %+v, %v", got, err, tc.want, tc.err)
			}
		})
	}
	if got := (IfaceCounters{RxBytes: 3, TxBytes: 4}).Bytes(); got != 7 {
		t.Errorf("Bytes = %d", got)
	}
	if _, err := ParseNetDev(strings.NewReader("  eth0: 1 2 3\n"), "eth0"); err == nil {
		t.Error("short line: want an error")
	}
}
