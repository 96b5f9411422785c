package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The network tests: bulk TCP with iperf3 (tcp1, tcp4), request/response
// on one connection (rr) and connection setup (crr) with slimprobe. crr1,
// the C client's, is in crr1.go.

// noServer is a test without a server of its own and without checks
// beyond its needs.
type noServer struct{}

func (noServer) check(context.Context, *runner) error { return nil }
func (noServer) server() server                       { return nil }

// tcpTest is iperf3's bulk TCP throughput with streams streams. iperf3
// is no need of its own: Run wants it whatever the tests.
type tcpTest struct {
	noServer
	streams int
}

func (t tcpTest) name() string {
	if t.streams == 1 {
		return TestTCP1
	}
	return TestTCP4
}

func (tcpTest) needs() []tool { return nil }

func (tcpTest) duration(c Config) (time.Duration, time.Duration) {
	d := time.Duration(c.tcpSeconds()) * time.Second
	return d, d
}

// measure runs iperf3 with t.streams streams, against a one-off server on
// a fresh port. iperf3's server closes and re-creates its listener after
// every test; a fresh server and port per test makes every test start
// the same way in every mode (and keeps slim mode clear of the previous
// listener while the broker retires it).
func (t tcpTest) measure(ctx context.Context, r *runner, e *env) ([]value, error) {
	port := e.nextPort
	e.nextPort++
	srv := r.start(ctx, e.server, "iperf3", "-s", "-1", "-p", strconv.Itoa(port))
	defer func() {
		if ctx.Err() != nil {
			srv.stop() // interrupted or out of time: no test to finish
			return
		}
		srv.finish(serverExitWait)
	}()
	if e.mode == ModeSlim {
		if err := r.waitListeners(ctx, e.addr, port); err != nil {
			return nil, err
		}
	}
	secs := strconv.Itoa(r.cfg.tcpSeconds())
	deadline := time.Now().Add(iperfStartTimeout)
	for {
		if srv.exited() {
			return nil, fmt.Errorf("iperf3 server: %s", srv.failure())
		}
		out, cpu, err := r.clientCommand(ctx, e, "iperf3", "-c", e.addr.String(), "-p", strconv.Itoa(port),
			"-t", secs, "-P", strconv.Itoa(t.streams), "-J")
		res, perr := ParseIperf3(out)
		if perr != nil && (errors.Is(perr, ErrIperf3) || err == nil) {
			err = perr // iperf3's own message says more than its exit code
		}
		if err == nil {
			gb := float64(res.Bytes) / 1e9
			return []value{
				{id: t.throughputFig(), v: res.BitsPerSecond / 1e9, show: "Gbit/s"},
				{id: t.cpuFig(), v: cpu.Seconds() / gb, show: unitCPUPerGB, work: gb},
			}, nil
		}
		if !iperf3Retryable(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond) // the server is starting
	}
}

func (t tcpTest) throughputFig() string {
	if t.streams == 1 {
		return FigTCP1Throughput
	}
	return FigTCP4Throughput
}

func (t tcpTest) cpuFig() string {
	if t.streams == 1 {
		return FigTCP1CPU
	}
	return FigTCP4CPU
}

// rrTest is slimprobe rr against the rrserve every mode has: ping-pong
// latency and rate on one connection.
type rrTest struct{ noServer }

func (rrTest) name() string  { return TestRR }
func (rrTest) needs() []tool { return nil }

func (rrTest) duration(c Config) (time.Duration, time.Duration) { return c.RRTime, c.RRTime }

func (rrTest) measure(ctx context.Context, r *runner, e *env) ([]value, error) {
	out, err := r.probe(ctx, e, "rr", "-addr", r.dst(e, rrPort), "-size", strconv.Itoa(r.cfg.RRSize),
		"-duration", r.cfg.RRTime.String())
	if err != nil {
		return nil, err
	}
	res, err := ParseRR(out)
	if err != nil {
		return nil, err
	}
	return withProbeCPU([]value{
		{id: FigRRP50, v: res.P50, show: "µs p50"},
		{id: FigRRP99, v: res.P99, show: "µs p99"},
		{id: FigRRRate, v: res.TPS, show: "/s"},
	}, FigRRCPU, res.CPUStart, res.CPUEnd, float64(res.Transactions))
}

// crrTest is slimprobe crr against the crrserve every mode has:
// connections set up per second with Config.CRRWorkers clients at once.
type crrTest struct{ noServer }

func (crrTest) name() string  { return TestCRR }
func (crrTest) needs() []tool { return nil }

func (crrTest) duration(c Config) (time.Duration, time.Duration) { return c.CRRTime, c.CRRTime }

func (crrTest) measure(ctx context.Context, r *runner, e *env) ([]value, error) {
	out, err := r.probe(ctx, e, "crr", "-addr", r.dst(e, crrPort), "-workers", strconv.Itoa(r.cfg.CRRWorkers),
		"-duration", r.cfg.CRRTime.String())
	if err != nil {
		return nil, err
	}
	res, err := ParseCRR(out)
	if err != nil {
		return nil, err
	}
	if res.Errors > 0 {
		r.warn("%s crr: %d of %d connections failed (first: %s)", e.mode, res.Errors, res.Errors+res.Connections, res.FirstError)
	}
	return withProbeCPU([]value{
		{id: FigCRRRate, v: res.CPS, show: "conn/s"},
		{id: FigCRRConnectP50, v: res.Connect.P50, show: "µs p50"},
		{id: FigCRRConnectP99, v: res.Connect.P99, show: "µs p99"},
	}, FigCRRCPU, res.CPUStart, res.CPUEnd, float64(res.Connections))
}
