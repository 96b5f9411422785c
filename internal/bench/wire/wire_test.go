package wire

import (
	"encoding/json"
	"testing"
)

// The JSON names are the contract: this test fails when one is renamed
// or dropped. A new field adds to the expected text.
func TestJSONNames(t *testing.T) {
	lat := Latencies{P50: 1, P90: 2, P99: 3, Mean: 4, Min: 5, Max: 6}
	const latJSON = `"p50Us":1,"p90Us":2,"p99Us":3,"meanUs":4,"minUs":5,"maxUs":6`
	cpu := CPUTimes{User: 1, Nice: 2, System: 3, Idle: 4, IOWait: 5, IRQ: 6, SoftIRQ: 7, Steal: 8}
	const cpuJSON = `{"user":1,"nice":2,"system":3,"idle":4,"iowait":5,"irq":6,"softirq":7,"steal":8}`
	const cpusJSON = `"cpuStart":` + cpuJSON + `,"cpuEnd":` + cpuJSON
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"rr", RRResult{Mode: "rr", Addr: "a", Size: 1, Transactions: 2, Seconds: 3, TPS: 4, Latencies: lat, CPUStart: cpu, CPUEnd: cpu},
			`{"mode":"rr","addr":"a","size":1,"transactions":2,"seconds":3,"tps":4,` + latJSON + `,` + cpusJSON + `}`},
		{"crr", CRRResult{Mode: "crr", Addr: "a", Workers: 1, Connections: 2, Errors: 3, FirstError: "x", Seconds: 4, CPS: 5,
			Connect: lat, Transaction: lat, CPUStart: cpu, CPUEnd: cpu},
			`{"mode":"crr","addr":"a","workers":1,"connections":2,"errors":3,"firstError":"x","seconds":4,"cps":5,` +
				`"connect":{` + latJSON + `},"transaction":{` + latJSON + `},` + cpusJSON + `}`},
		{"memcached", MemcachedResult{Mode: "memcached", Addr: "a", Conns: 1, Keys: 2, ValueSize: 3, Ratio: "1:10", Ops: 4, Sets: 5, Gets: 6,
			Hits: 7, Misses: 8, Errors: 9, FirstError: "x", Seconds: 10, OpsPerSec: 11, Latencies: lat, CPUStart: cpu, CPUEnd: cpu},
			`{"mode":"memcached","addr":"a","conns":1,"keys":2,"valueSize":3,"ratio":"1:10","ops":4,"sets":5,"gets":6,"hits":7,` +
				`"misses":8,"errors":9,"firstError":"x","seconds":10,"opsPerSec":11,` + latJSON + `,` + cpusJSON + `}`},
		{"crr1", CRR1Result{Mode: "crr1", Addr: "a", Connections: 1, Errors: 2, FirstError: "x", Seconds: 3, CPS: 4, Latencies: lat,
			UserSeconds: 5, SystemSeconds: 6, CPUStart: cpu, CPUEnd: cpu},
			`{"mode":"crr1","addr":"a","connections":1,"errors":2,"firstError":"x","seconds":3,"cps":4,` + latJSON +
				`,"userSeconds":5,"systemSeconds":6,` + cpusJSON + `}`},
		{"connect", ConnectResult{Client: ConnReport{Local: "l", Peer: "p", Bytes: 1, KeepIdle: 2, Err: "x"}, Server: ConnReport{Accept: "a"}},
			`{"client":{"local":"l","peer":"p","accept":"","bytes":1,"keepIdle":2,"err":"x"},"server":{"local":"","peer":"","accept":"a","bytes":0}}`},
		{"summary", ConnectSummary{Conns: 1, Failed: 2, FirstError: "x", Seconds: 3}, `{"conns":1,"failed":2,"firstError":"x","seconds":3}`},
		{"hold", HoldResult{Conns: 1, Failed: 2, FirstError: "x", Ports: []uint16{3}}, `{"conns":1,"failed":2,"firstError":"x","ports":[3]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("got  %s\nwant %s", b, tc.want)
			}
		})
	}
}
