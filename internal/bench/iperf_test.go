package bench

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestParseIperf3(t *testing.T) {
	for _, tc := range []struct {
		file        string
		streams     int
		bytes       uint64
		seconds     float64
		bps         float64
		retransmits int
		err         error
	}{
		// Recorded from iperf 3.12 over loopback.
		{file: "iperf3-1stream.json", streams: 1, bytes: 1985740800, seconds: 1.000478, bps: 15878336555.12665, retransmits: 18},
		{file: "iperf3-4streams.json", streams: 4, bytes: 2309554123, seconds: 1.000358, bps: 18469820788.157837, retransmits: 2},
		{file: "iperf3-refused.json", err: ErrIperf3},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseIperf3(b)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err != nil {
				if !iperf3Retryable(err) {
					t.Errorf("%v: want it retryable", err)
				}
				return
			}
			if got.Streams != tc.streams || got.Bytes != tc.bytes || got.Seconds != tc.seconds ||
				got.BitsPerSecond != tc.bps || got.Retransmits != tc.retransmits {
				t.Errorf("got %+v", got)
			}
			if got.SenderCPU <= 0 || got.ReceiverCPU <= 0 {
				t.Errorf("no CPU figures: %+v", got)
			}
		})
	}
}

func TestParseIperf3Bad(t *testing.T) {
	for name, in := range map[string]string{
		"empty":       "",
		"not json":    "iperf3: error - unable to connect",
		"no summary":  `{"start":{},"end":{}}`,
		"zero length": `{"end":{"sum_received":{"seconds":0,"bytes":0}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if r, err := ParseIperf3([]byte(in)); err == nil {
				t.Errorf("ParseIperf3(%q) = %+v, want an error", in, r)
			}
		})
	}
}

func FuzzParseIperf3(f *testing.F) {
	for _, name := range []string{"iperf3-1stream.json", "iperf3-refused.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseIperf3(b)
		if err == nil && r.Seconds <= 0 {
			t.Errorf("accepted a report without duration: %+v", r)
		}
	})
}
