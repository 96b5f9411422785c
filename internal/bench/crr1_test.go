package bench

import (
	"errors"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/bench/wire"
)

func TestParseCRR1(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    wire.CRR1Result
		wantErr bool
	}{
		{name: "ok", in: `{"mode":"crr1","addr":"10.0.0.1:7203","connections":6691,"errors":2,"firstError":"connect: Connection refused",` +
			`"seconds":0.500058,"cps":13380.457,"p50Us":68.701,"p90Us":102.696,"p99Us":194.941,"meanUs":74.633,"minUs":32.361,"maxUs":1240.423,` +
			`"userSeconds":0.010614,"systemSeconds":0.283052,"cpuStart":{"user":1,"nice":2,"system":3,"idle":4,"iowait":0,"irq":0,"softirq":0,"steal":0},"cpuEnd":{"user":5,"nice":6,"system":7,"idle":8,"iowait":0,"irq":0,"softirq":0,"steal":0}}`,
			want: wire.CRR1Result{Mode: "crr1", Addr: "10.0.0.1:7203", Connections: 6691, Errors: 2, FirstError: "connect: Connection refused",
				Seconds: 0.500058, CPS: 13380.457, Latencies: wire.Latencies{P50: 68.701, P90: 102.696, P99: 194.941, Mean: 74.633, Min: 32.361, Max: 1240.423},
				UserSeconds: 0.010614, SystemSeconds: 0.283052, CPUStart: wire.CPUTimes{User: 1, Nice: 2, System: 3, Idle: 4}, CPUEnd: wire.CPUTimes{User: 5, Nice: 6, System: 7, Idle: 8}}},
		{name: "no connection", in: `{"mode":"crr1","connections":0,"errors":101,"firstError":"connect: Connection refused","seconds":0.01}`, wantErr: true},
		{name: "another report", in: `{"mode":"crr","connections":5,"seconds":1}`, wantErr: true},
		{name: "not JSON", in: "crr1: bad address", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCRR1([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want one: %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// crr1.c prints wire.CRR1Result by hand: every JSON name must be in it.
func TestCRR1SourcePrintsEveryField(t *testing.T) {
	var names func(reflect.Type) []string
	names = func(typ reflect.Type) []string {
		var ns []string
		for f := range typ.Fields() {
			if f.Anonymous {
				ns = append(ns, names(f.Type)...)
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			ns = append(ns, name)
			if f.Type.Kind() == reflect.Struct {
				ns = append(ns, names(f.Type)...) // cpuStart's fields
			}
		}
		return ns
	}
	for _, n := range names(reflect.TypeFor[wire.CRR1Result]()) {
		if !strings.Contains(string(crr1Source), `\"`+n+`\"`) {
			t.Errorf("crr1.c does not print %q", n)
		}
	}
}

func TestCRR1Values(t *testing.T) {
	res := wire.CRR1Result{Connections: 1000, CPS: 4000, Latencies: wire.Latencies{P50: 200, P99: 900}}
	slimd := 20 * time.Millisecond
	// 1000 connects: 100 in (10,20] µs, 800 in (20,40], 100 in (40,80].
	h := Histogram{Bounds: []float64{10e-6, 20e-6, 40e-6, 80e-6, math.Inf(1)}, Counts: []float64{0, 100, 900, 1000, 1000}}
	for _, tc := range []struct {
		name    string
		slimd   *time.Duration
		handler *Histogram
		want    map[string]float64
	}{
		{"slim", &slimd, &h, map[string]float64{FigCRR1Rate: 4000, FigCRR1P50: 200, FigCRR1P99: 900, FigCRR1CPU: 300,
			// 20 ms over 1000 connections; p50: rank 500 of (20,40]'s
			// 800 from 100: 20 + 20*400/800; p99: rank 990, 90 of
			// (40,80]'s 100.
			FigCRR1SlimdCPU: 20, FigCRR1HandlerP50: 30, FigCRR1HandlerP99: 76}},
		{"overlay", &slimd, nil, map[string]float64{FigCRR1Rate: 4000, FigCRR1P50: 200, FigCRR1P99: 900, FigCRR1CPU: 300, FigCRR1SlimdCPU: 20}},
		{"sides not measured", nil, nil, map[string]float64{FigCRR1Rate: 4000, FigCRR1P50: 200, FigCRR1P99: 900, FigCRR1CPU: 300}},
		{"no handler quantile", &slimd, &Histogram{Bounds: []float64{math.Inf(1)}, Counts: []float64{5}},
			map[string]float64{FigCRR1Rate: 4000, FigCRR1P50: 200, FigCRR1P99: 900, FigCRR1CPU: 300, FigCRR1SlimdCPU: 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals := crr1Values(res, 300*time.Millisecond, tc.slimd, tc.handler)
			got := map[string]float64{}
			for _, v := range vals {
				if _, dup := got[v.id]; dup {
					t.Errorf("%s twice", v.id)
				}
				got[v.id] = v.v
				if figureUnit(v.id) == "" {
					t.Errorf("%s is no figure", v.id)
				}
				if (v.work > 0) != (v.id == FigCRR1CPU) {
					t.Errorf("%s: work %v: only the machine's CPU figure has per-side figures", v.id, v.work)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("figures %v, want %v", got, tc.want)
			}
			for id, w := range tc.want {
				if math.Abs(got[id]-w) > 1e-6 {
					t.Errorf("%s = %v, want %v", id, got[id], w)
				}
			}
		})
	}
}

// crrServer is crrserve -wait-eof on loopback: it answers one byte with
// one byte and closes after the client has.
func crrServer(t *testing.T, network, addr string) string {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("%s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err != nil {
					return
				}
				if _, err := c.Write(b[:]); err != nil {
					return
				}
				c.Read(b[:]) // the client's FIN
			}()
		}
	}()
	return ln.Addr().String()
}

// TestCRR1Client builds the embedded client with this machine's compiler
// and runs it on loopback, IPv4 and IPv6: its report must parse.
func TestCRR1Client(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs C")
	}
	cc, err := findCC()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v under CI (scripts/deps.sh installs gcc and libc6-dev)", err)
		}
		t.Skip(err)
	}
	bin, static, version, err := compileCRR1(t.Context(), cc, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s, static %v", version, static)
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			addr := crrServer(t, tc.network, tc.addr)
			out, err := exec.CommandContext(t.Context(), bin, addr, "0.2").Output()
			if err != nil {
				t.Fatalf("%s: %v: %s", bin, err, out)
			}
			res, err := ParseCRR1(out)
			if err != nil {
				t.Fatal(err)
			}
			if res.Addr != addr || res.Errors != 0 || res.P50 <= 0 || res.P99 < res.P50 || res.Seconds < 0.2 {
				t.Errorf("report %+v", res)
			}
			if _, err := probeCPU(res.CPUStart, res.CPUEnd); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		out, err := exec.CommandContext(t.Context(), bin, addr, "5").Output()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("exit %v, want status 1", err)
		}
		// The client gives up once more than MAX_FAILING (100)
		// connections failed, and more than succeeded.
		res, err := ParseCRR1(out)
		if err == nil || res.Errors <= 100 || !strings.Contains(res.FirstError, "refused") {
			t.Errorf("report %+v, %v", res, err)
		}
	})
	for _, args := range [][]string{{"10.0.0.1", "1"}, {"::1:80", "1"}, {"[::1]:80", "0"}, {"10.0.0.1:99999", "1"}, {"10.0.0.1:80"}} {
		err := exec.CommandContext(t.Context(), bin, args...).Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%q: %v, want usage status 2", args, err)
		}
	}
}
