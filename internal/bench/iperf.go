package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Iperf3Result is what the benchmark takes from `iperf3 -c ... -J`.
type Iperf3Result struct {
	// Streams is the number of parallel streams (-P).
	Streams int
	// Bytes and Seconds are the receiver's totals over all streams.
	Bytes   uint64
	Seconds float64
	// BitsPerSecond is the receiver's throughput over all streams.
	BitsPerSecond float64
	// Retransmits is the sender's count of retransmitted segments.
	Retransmits int
	// SenderCPU and ReceiverCPU are iperf3's own processes' CPU use, in
	// percent of one CPU, as iperf3 reports them.
	SenderCPU, ReceiverCPU float64
}

// ErrIperf3 is an error iperf3 reported in its JSON output (it still exits
// 0 then, at least in 3.12).
var ErrIperf3 = errors.New("iperf3")

type iperf3JSON struct {
	Start struct {
		TestStart struct {
			NumStreams int `json:"num_streams"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		SumSent struct {
			Retransmits int `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived *struct {
			Seconds       float64 `json:"seconds"`
			Bytes         uint64  `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		CPU struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
	Error string `json:"error"`
}

// ParseIperf3 reads the client's JSON report (-J) of a TCP test. An error
// iperf3 reports is returned wrapping ErrIperf3.
func ParseIperf3(b []byte) (Iperf3Result, error) {
	var j iperf3JSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Iperf3Result{}, fmt.Errorf("parse iperf3 output %q: %w", trim(strings.TrimSpace(string(b)), 80), err)
	}
	if j.Error != "" {
		return Iperf3Result{}, fmt.Errorf("%w: %s", ErrIperf3, j.Error)
	}
	s := j.End.SumReceived
	if s == nil || s.Seconds <= 0 {
		return Iperf3Result{}, errors.New("parse iperf3 output: no receiver summary (end.sum_received)")
	}
	return Iperf3Result{
		Streams:       j.Start.TestStart.NumStreams,
		Bytes:         s.Bytes,
		Seconds:       s.Seconds,
		BitsPerSecond: s.BitsPerSecond,
		Retransmits:   j.End.SumSent.Retransmits,
		SenderCPU:     j.End.CPU.HostTotal,
		ReceiverCPU:   j.End.CPU.RemoteTotal,
	}, nil
}

// iperf3Retryable tells the errors of an iperf3 client that started
// before its server listened (or while the previous test was ending)
// from real failures.
func iperf3Retryable(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	for _, m := range []string{"Connection refused", "server is busy", "unable to connect"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}
