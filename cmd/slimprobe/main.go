// Command slimprobe is a test program for the fast path: a TCP server and
// client that report the addresses the application sees (getsockname,
// getpeername, accept's address) and move bytes. Built with CGO_ENABLED=0
// it is a static binary, which is one of the cases the fast path must
// cover (no LD_PRELOAD would reach it).
//
// Modes:
//
//	serve, connect        address reports and bulk bytes (tests)
//	rrserve, rr           request/response ping-pong on one connection
//	crrserve, crr         connect, 1-byte request, 1-byte response, close
//	wait                  connect until a server answers (readiness)
//	memcached             memcached load generator (text protocol)
//	get                   fetch a URL and print the body (a lab slimd's
//	                      metrics, from inside its host's namespace)
//
// rr, crr and memcached print one JSON object (see rrResult, crrResult and
// mcResult) that slimctl bench reads.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Report is what one connection looked like to the application.
type Report struct {
	Local  string `json:"local"`  // getsockname
	Peer   string `json:"peer"`   // getpeername
	Accept string `json:"accept"` // accept()'s address (server side)
	Bytes  int64  `json:"bytes"`
	// KeepIdle is TCP_KEEPIDLE read back after connect (client, with
	// -keepidle): the socket's value whichever socket is behind the fd.
	KeepIdle int    `json:"keepIdle,omitempty"`
	Err      string `json:"err,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: slimprobe serve|connect|hold|attack|rrserve|rr|crrserve|crr|wait|memcached|get [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "connect":
		err = connect(os.Args[2:])
	case "rrserve":
		err = rrServe(os.Args[2:])
	case "rr":
		err = rr(os.Args[2:])
	case "crrserve":
		err = crrServe(os.Args[2:])
	case "crr":
		err = crr(os.Args[2:])
	case "wait":
		err = waitFor(os.Args[2:])
	case "memcached":
		err = memcached(os.Args[2:])
	case "get":
		err = get(os.Args[2:])
	case "hold":
		err = hold(os.Args[2:])
	case "attack":
		err = attack(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "slimprobe:", err)
		os.Exit(1)
	}
}

func sockname(fd int, f func(int) (unix.Sockaddr, error)) string {
	sa, err := f(fd)
	if err != nil {
		return "error: " + err.Error()
	}
	switch v := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(v.Addr), uint16(v.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(v.Addr), uint16(v.Port)).String()
	}
	return fmt.Sprintf("%T", sa)
}

// serve accepts with raw accept4 so that accept's own address is what the
// kernel returned, then sends the report line and counts the bytes the
// client sends until it half-closes.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", "0.0.0.0:7000", "listen address")
	fs.Parse(args)
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil {
		return err
	}
	family, sa := sockaddrOf(ap)
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(fd, 1024); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	fmt.Printf("listening %s\n", sockname(fd, unix.Getsockname))
	for {
		cfd, csa, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		rep := Report{Local: sockname(cfd, unix.Getsockname), Peer: sockname(cfd, unix.Getpeername),
			Accept: sockname(cfd, func(int) (unix.Sockaddr, error) { return csa, nil })}
		go handle(cfd, rep)
	}
}

func handle(fd int, rep Report) {
	f := os.NewFile(uintptr(fd), "conn")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return
	}
	defer c.Close()
	b, _ := json.Marshal(rep)
	c.Write(append(b, '\n'))
	n, _ := io.Copy(io.Discard, c)
	fmt.Fprintf(c, "%d\n", n)
}

// connect makes conns connections (parallel at once), each sending bytes
// bytes, and prints one JSON line per connection: the client's report with
// the server's report in Accept/Peer fields of a wrapper.
func connect(args []string) error {
	fs := flag.NewFlagSet("connect", flag.ExitOnError)
	addr := fs.String("addr", "", "server address")
	n := fs.Int64("bytes", 1<<20, "bytes to send per connection")
	conns := fs.Int("conns", 1, "connections")
	parallel := fs.Int("parallel", 1, "connections at once")
	blocking := fs.Bool("blocking", false, "blocking connect(2) instead of Go's non-blocking connect + epoll")
	signals := fs.Bool("signals", false, "send ourselves SIGUSR1 every 100us while connecting (interrupted connects)")
	summary := fs.Bool("summary", false, "print one summary line instead of a line per connection")
	keepIdle := fs.Int("keepidle", 0, "set SO_KEEPALIVE and this TCP_KEEPIDLE before connect, and report TCP_KEEPIDLE after (0: leave alone)")
	tos := fs.Int("tos", -1, "set IP_TOS (IPv4) or IPV6_TCLASS (IPv6) to this before connect (-1: leave alone)")
	fs.Parse(args)
	if *signals {
		stop := interrupter()
		defer stop()
	}
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil {
		return err
	}
	type result struct {
		Client Report `json:"client"`
		Server Report `json:"server"`
	}
	start := time.Now()
	out := make(chan result, *conns)
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	for range *conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cl, sv := one(ap, *n, *blocking, *keepIdle, *tos)
			out <- result{cl, sv}
		}()
	}
	go func() { wg.Wait(); close(out) }()
	enc := json.NewEncoder(os.Stdout)
	failed := 0
	var firstErr string
	for r := range out {
		if r.Client.Err != "" {
			failed++
			if firstErr == "" {
				firstErr = r.Client.Err
			}
		}
		if !*summary {
			enc.Encode(r)
		}
	}
	if *summary {
		enc.Encode(map[string]any{"conns": *conns, "failed": failed, "firstError": firstErr, "seconds": time.Since(start).Seconds()})
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d connections failed", failed, *conns)
	}
	return nil
}

func one(ap netip.AddrPort, n int64, blocking bool, keepIdle, tos int) (cl, sv Report) {
	// setOpts runs on the socket before connect.
	setOpts := func(fd int) error {
		if tos >= 0 {
			var err error
			if ap.Addr().Is4() {
				err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, tos)
			} else {
				err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tos)
			}
			if err != nil {
				return err
			}
		}
		if keepIdle == 0 {
			return nil
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1); err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, keepIdle)
	}
	// readOpts runs on the connected socket before Go sees it
	// (net.FileConn turns keepalive on with its own idle time).
	readOpts := func(fd int) {
		if keepIdle != 0 {
			cl.KeepIdle, _ = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
		}
	}
	var c net.Conn
	var err error
	if blocking {
		c, err = blockingDial(ap, setOpts, readOpts)
	} else {
		d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = setOpts(int(fd)) }); err != nil {
				return err
			}
			return serr
		}}
		c, err = d.Dial("tcp", ap.String())
	}
	if err != nil {
		cl.Err = err.Error()
		return
	}
	defer c.Close()
	sc, _ := c.(*net.TCPConn).SyscallConn()
	sc.Control(func(fd uintptr) {
		cl.Local = sockname(int(fd), unix.Getsockname)
		cl.Peer = sockname(int(fd), unix.Getpeername)
		if !blocking {
			readOpts(int(fd))
		}
	})
	c.SetDeadline(time.Now().Add(60 * time.Second))
	rd := bufio.NewReader(c)
	line, err := rd.ReadBytes('\n')
	if err != nil {
		cl.Err = "read server report: " + err.Error()
		return
	}
	json.Unmarshal(line, &sv)
	buf := make([]byte, 64<<10)
	for left := n; left > 0; {
		k := min(left, int64(len(buf)))
		w, err := c.Write(buf[:k])
		if err != nil {
			cl.Err = err.Error()
			return
		}
		left -= int64(w)
	}
	c.(*net.TCPConn).CloseWrite()
	var got int64
	if _, err := fmt.Fscan(rd, &got); err != nil || got != n {
		cl.Err = fmt.Sprintf("server counted %d of %d bytes (%v)", got, n, err)
	}
	cl.Bytes = n
	return
}

// interrupter sends the process SIGUSR1 every 100 us until stopped; Go
// installs its handler with SA_RESTART, so interrupted calls restart, as
// in most programs.
func interrupter() func() {
	ch := make(chan os.Signal, 64)
	signal.Notify(ch, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Microsecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ch:
			case <-t.C:
				syscall.Kill(os.Getpid(), syscall.SIGUSR1)
			}
		}
	}()
	return func() { close(done); signal.Stop(ch) }
}

// blockingDial connects with a blocking connect(2) on the calling thread,
// after setOpts, then calls connected and hands the socket to the Go
// runtime.
func blockingDial(ap netip.AddrPort, setOpts func(fd int) error, connected func(fd int)) (net.Conn, error) {
	family, sa := sockaddrOf(ap)
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := setOpts(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect: %w", err)
	}
	connected(fd)
	f := os.NewFile(uintptr(fd), "conn")
	defer f.Close()
	return net.FileConn(f)
}

// The benchmark modes (rr, crr and their servers) use blocking system
// calls on one thread per connection, as netperf does, rather than Go's
// netpoller: a ping-pong then costs one write and one read per side, and
// the latency measured is the network stack's, not the scheduler's.

// sockaddrOf converts ap for the raw socket calls.
func sockaddrOf(ap netip.AddrPort) (int, unix.Sockaddr) {
	if ap.Addr().Is4() || ap.Addr().Is4In6() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// listenBlocking makes a blocking TCP listener on addr.
func listenBlocking(addr string) (int, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, err
	}
	family, sa := sockaddrOf(ap)
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", addr, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen %s: %w", addr, err)
	}
	return fd, nil
}

// acceptLoop accepts on fd forever with acceptors threads, handing each
// connection to handle on the accepting goroutine.
func acceptLoop(fd, acceptors int, handle func(int)) error {
	errc := make(chan error, acceptors)
	for range acceptors {
		go func() {
			for {
				cfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
				switch err {
				case nil:
					handle(cfd)
				case unix.EINTR, unix.ECONNABORTED, unix.EMFILE, unix.ENFILE:
					// Transient: a signal, a client gone before accept,
					// or descriptors exhausted for a moment.
					if err == unix.EMFILE || err == unix.ENFILE {
						time.Sleep(10 * time.Millisecond)
					}
				default:
					errc <- fmt.Errorf("accept: %w", err)
					return
				}
			}
		}()
	}
	return <-errc
}

// readRetry is read(2), restarted after EINTR.
func readRetry(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// writeAll writes all of b.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// readFull reads exactly len(b) bytes.
func readFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := readRetry(fd, b)
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		b = b[n:]
	}
	return nil
}

// rrServe is the rr server: every connection is echoed back until the
// client closes it, each on its own thread.
func rrServe(args []string) error {
	fs := flag.NewFlagSet("rrserve", flag.ExitOnError)
	addr := fs.String("addr", "0.0.0.0:7201", "listen address")
	fs.Parse(args)
	fd, err := listenBlocking(*addr)
	if err != nil {
		return err
	}
	return acceptLoop(fd, 1, func(cfd int) {
		go func() {
			defer unix.Close(cfd)
			unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			buf := make([]byte, 64<<10)
			for {
				n, err := readRetry(cfd, buf)
				if err != nil || n == 0 {
					return
				}
				if writeAll(cfd, buf[:n]) != nil {
					return
				}
			}
		}()
	})
}

// crrServe is the crr server: read one byte, answer one byte, close. The
// server closes first, as an HTTP/1.0 server does, so TIME_WAIT stays on
// the server side and a fast client does not run out of ports.
func crrServe(args []string) error {
	fs := flag.NewFlagSet("crrserve", flag.ExitOnError)
	addr := fs.String("addr", "0.0.0.0:7202", "listen address")
	acceptors := fs.Int("acceptors", 4, "threads blocked in accept(2)")
	waitEOF := fs.Bool("wait-eof", false, "close only after the client has: the client's side keeps TIME_WAIT")
	fs.Parse(args)
	fd, err := listenBlocking(*addr)
	if err != nil {
		return err
	}
	return acceptLoop(fd, max(1, *acceptors), func(cfd int) {
		var b [1]byte
		if n, err := readRetry(cfd, b[:]); err == nil && n == 1 {
			writeAll(cfd, b[:])
			if *waitEOF {
				readRetry(cfd, b[:])
			}
		}
		unix.Close(cfd)
	})
}

// dialBlocking connects a new blocking socket to ap with connect(2).
func dialBlocking(ap netip.AddrPort) (int, error) {
	family, sa := sockaddrOf(ap)
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %s: %w", ap, err)
	}
	return fd, nil
}

// cpuStatLine returns the first line of /proc/stat (the machine's total
// CPU times), which the benchmark diffs; it is read here so that the
// window is exactly the timed loop.
func cpuStatLine() string {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}

// latencyStats are percentiles of a set of latencies, in microseconds.
type latencyStats struct {
	P50  float64 `json:"p50Us"`
	P90  float64 `json:"p90Us"`
	P99  float64 `json:"p99Us"`
	Mean float64 `json:"meanUs"`
	Min  float64 `json:"minUs"`
	Max  float64 `json:"maxUs"`
}

// summarize sorts d and returns its nearest-rank percentiles.
func summarize(d []time.Duration) latencyStats {
	if len(d) == 0 {
		return latencyStats{}
	}
	slices.Sort(d)
	us := func(x time.Duration) float64 { return float64(x) / float64(time.Microsecond) }
	pct := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(d)))) - 1
		return us(d[min(max(i, 0), len(d)-1)])
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return latencyStats{P50: pct(0.50), P90: pct(0.90), P99: pct(0.99),
		Mean: us(sum) / float64(len(d)), Min: us(d[0]), Max: us(d[len(d)-1])}
}

// rrResult is what rr prints: one JSON object. A contract with slimctl
// bench: add fields, never rename them.
type rrResult struct {
	Mode         string  `json:"mode"`
	Addr         string  `json:"addr"`
	Size         int     `json:"size"`
	Transactions int     `json:"transactions"`
	Seconds      float64 `json:"seconds"`
	TPS          float64 `json:"tps"`
	latencyStats
	CPUStatStart string `json:"cpuStatStart"`
	CPUStatEnd   string `json:"cpuStatEnd"`
}

// rr runs request/response transactions of size bytes each way on one
// connection, one at a time, until n transactions or duration pass.
func rr(args []string) error {
	fs := flag.NewFlagSet("rr", flag.ExitOnError)
	addr := fs.String("addr", "", "server address (slimprobe rrserve)")
	size := fs.Int("size", 1, "bytes per request and per response")
	n := fs.Int("n", 0, "transactions (0: until -duration)")
	duration := fs.Duration("duration", 0, "time to run (0: until -n)")
	warmup := fs.Int("warmup", 100, "untimed transactions first")
	fs.Parse(args)
	if *n <= 0 && *duration <= 0 {
		return fmt.Errorf("rr: set -n or -duration")
	}
	if *size < 1 {
		return fmt.Errorf("rr: -size must be at least 1")
	}
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil {
		return err
	}
	fd, err := dialBlocking(ap)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	req, resp := make([]byte, *size), make([]byte, *size)
	one := func() error {
		if err := writeAll(fd, req); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		if err := readFull(fd, resp); err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		return nil
	}
	for range *warmup {
		if err := one(); err != nil {
			return err
		}
	}
	lat := make([]time.Duration, 0, max(*n, 1<<16))
	res := rrResult{Mode: "rr", Addr: ap.String(), Size: *size, CPUStatStart: cpuStatLine()}
	start := time.Now()
	for *n <= 0 || len(lat) < *n {
		t := time.Now()
		if err := one(); err != nil {
			return err
		}
		now := time.Now()
		lat = append(lat, now.Sub(t))
		if *duration > 0 && now.Sub(start) >= *duration {
			break
		}
	}
	el := time.Since(start)
	res.CPUStatEnd = cpuStatLine()
	res.Transactions = len(lat)
	res.Seconds = el.Seconds()
	res.TPS = float64(len(lat)) / el.Seconds()
	res.latencyStats = summarize(lat)
	return json.NewEncoder(os.Stdout).Encode(res)
}

// crrResult is what crr prints: one JSON object. A contract with slimctl
// bench: add fields, never rename them.
type crrResult struct {
	Mode        string  `json:"mode"`
	Addr        string  `json:"addr"`
	Workers     int     `json:"workers"`
	Connections int     `json:"connections"`
	Errors      int     `json:"errors"`
	FirstError  string  `json:"firstError,omitempty"`
	Seconds     float64 `json:"seconds"`
	CPS         float64 `json:"cps"`
	// Connect is connect(2)'s latency: connection setup.
	Connect latencyStats `json:"connect"`
	// Transaction is connect, request, response and close.
	Transaction  latencyStats `json:"transaction"`
	CPUStatStart string       `json:"cpuStatStart"`
	CPUStatEnd   string       `json:"cpuStatEnd"`
}

// crr runs workers threads that each, one after another, connect, send one
// byte, receive one byte, wait for the server's close and close, until n
// connections each or duration pass.
func crr(args []string) error {
	fs := flag.NewFlagSet("crr", flag.ExitOnError)
	addr := fs.String("addr", "", "server address (slimprobe crrserve)")
	workers := fs.Int("workers", 1, "connections at once")
	n := fs.Int("n", 0, "connections per worker (0: until -duration)")
	duration := fs.Duration("duration", 0, "time to run (0: until -n)")
	closeFirst := fs.Bool("close-first", false, "close without waiting for the server's FIN (against crrserve -wait-eof): TIME_WAIT stays on this side")
	fs.Parse(args)
	if *n <= 0 && *duration <= 0 {
		return fmt.Errorf("crr: set -n or -duration")
	}
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil {
		return err
	}
	w := max(1, *workers)
	type workerResult struct {
		connect, txn []time.Duration
		errors       int
		firstErr     error
	}
	results := make([]workerResult, w)
	var wg sync.WaitGroup
	startGate := make(chan struct{})
	var start time.Time
	for i := range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			r := &results[i]
			r.connect = make([]time.Duration, 0, max(*n, 1<<14))
			r.txn = make([]time.Duration, 0, max(*n, 1<<14))
			<-startGate
			for *n <= 0 || len(r.txn) < *n {
				t0 := time.Now()
				tc, err := crrOne(ap, *closeFirst)
				now := time.Now()
				if err != nil {
					r.errors++
					if r.firstErr == nil {
						r.firstErr = err
					}
					if r.errors > 100 && r.errors > len(r.txn) {
						return // mostly failing: stop, and say so
					}
				} else {
					r.connect = append(r.connect, tc)
					r.txn = append(r.txn, now.Sub(t0))
				}
				if *duration > 0 && now.Sub(start) >= *duration {
					return
				}
			}
		}()
	}
	res := crrResult{Mode: "crr", Addr: ap.String(), Workers: w, CPUStatStart: cpuStatLine()}
	start = time.Now()
	close(startGate)
	wg.Wait()
	el := time.Since(start)
	res.CPUStatEnd = cpuStatLine()
	var conn, txn []time.Duration
	for _, r := range results {
		conn = append(conn, r.connect...)
		txn = append(txn, r.txn...)
		res.Errors += r.errors
		if r.firstErr != nil && res.FirstError == "" {
			res.FirstError = r.firstErr.Error()
		}
	}
	res.Connections = len(txn)
	res.Seconds = el.Seconds()
	res.CPS = float64(len(txn)) / el.Seconds()
	res.Connect = summarize(conn)
	res.Transaction = summarize(txn)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return err
	}
	if res.Connections == 0 {
		return fmt.Errorf("crr: no connection succeeded: %s", res.FirstError)
	}
	return nil
}

// crrOne is one crr transaction; it returns connect(2)'s duration.
func crrOne(ap netip.AddrPort, closeFirst bool) (time.Duration, error) {
	t := time.Now()
	fd, err := dialBlocking(ap)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	tc := time.Since(t)
	var b [1]byte
	if err := writeAll(fd, b[:]); err != nil {
		return 0, fmt.Errorf("send: %w", err)
	}
	if err := readFull(fd, b[:]); err != nil {
		return 0, fmt.Errorf("receive: %w", err)
	}
	if closeFirst {
		return tc, nil // this side's 4-tuple stays in TIME_WAIT
	}
	// Wait for the server's FIN before closing, so that this side closes
	// passively and keeps no TIME_WAIT.
	if n, err := readRetry(fd, b[:]); err != nil || n != 0 {
		return 0, fmt.Errorf("server did not close (%d, %v)", n, err)
	}
	return tc, nil
}

// waitFor connects to a server until one answers (readiness), then closes.
func waitFor(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	addr := fs.String("addr", "", "server address")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after")
	fs.Parse(args)
	deadline := time.Now().Add(*timeout)
	for {
		c, err := net.DialTimeout("tcp", *addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait %s: %w", *addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// get fetches a URL and copies the body to stdout; a status other than
// 200 is an error. slimctl bench reads the client host's slimd metrics
// with it: they are served on loopback inside the lab host's namespace.
func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	url := fs.String("url", "", "URL to fetch")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after")
	fs.Parse(args)
	if *url == "" {
		return fmt.Errorf("get: set -url")
	}
	c := &http.Client{Timeout: *timeout}
	resp, err := c.Get(*url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", *url, resp.Status)
	}
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return fmt.Errorf("get %s: %w", *url, err)
	}
	return nil
}

// mcResult is what memcached prints: one JSON object. A contract with
// slimctl bench: add fields, never rename them.
type mcResult struct {
	Mode      string `json:"mode"`
	Addr      string `json:"addr"`
	Conns     int    `json:"conns"`
	Keys      int    `json:"keys"`
	ValueSize int    `json:"valueSize"`
	// Ratio is sets:gets, as memtier_benchmark's --ratio.
	Ratio      string  `json:"ratio"`
	Ops        int     `json:"ops"`
	Sets       int     `json:"sets"`
	Gets       int     `json:"gets"`
	Hits       int     `json:"hits"`
	Misses     int     `json:"misses"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"firstError,omitempty"`
	Seconds    float64 `json:"seconds"`
	OpsPerSec  float64 `json:"opsPerSec"`
	// The latencies are of single operations: request written to
	// response read.
	latencyStats
	CPUStatStart string `json:"cpuStatStart"`
	CPUStatEnd   string `json:"cpuStatEnd"`
}

// memcached is a load generator speaking memcached's text protocol: conns
// connections, each on its own thread with one request outstanding (as
// memtier_benchmark with --pipeline=1), mixing set and get of keys drawn
// uniformly from -keys keys, which it stores first (untimed).
func memcached(args []string) error {
	fs := flag.NewFlagSet("memcached", flag.ExitOnError)
	addr := fs.String("addr", "", "memcached's address")
	conns := fs.Int("conns", 4, "connections, one thread each")
	n := fs.Int("n", 0, "operations per connection (0: until -duration)")
	duration := fs.Duration("duration", 0, "time to run (0: until -n)")
	keys := fs.Int("keys", 1000, "distinct keys")
	size := fs.Int("size", 64, "value size in bytes")
	ratio := fs.String("ratio", "1:10", "sets:gets")
	fs.Parse(args)
	if *n <= 0 && *duration <= 0 {
		return fmt.Errorf("memcached: set -n or -duration")
	}
	var sets, gets int
	if _, err := fmt.Sscanf(*ratio, "%d:%d", &sets, &gets); err != nil || sets < 0 || gets < 0 || sets+gets == 0 {
		return fmt.Errorf("memcached: -ratio %q: want sets:gets, such as 1:10", *ratio)
	}
	if *keys < 1 || *size < 1 || *size > 1<<20 {
		return fmt.Errorf("memcached: -keys must be at least 1 and -size 1 to %d", 1<<20)
	}
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil {
		return err
	}
	value := make([]byte, *size)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	names := make([]string, *keys)
	for k := range names {
		names[k] = fmt.Sprintf("slimprobe:%d", k)
	}
	// Store every key first, so that gets hit.
	pre, err := newMCConn(ap)
	if err != nil {
		return err
	}
	for k, key := range names {
		if err := pre.set(key, value); err != nil {
			pre.close()
			return fmt.Errorf("memcached: store key %d: %w", k, err)
		}
	}
	pre.close()

	w := max(1, *conns)
	type workerResult struct {
		lat                            []time.Duration
		sets, gets, hits, misses, errs int
		firstErr                       error
	}
	results := make([]workerResult, w)
	var wg sync.WaitGroup
	startGate := make(chan struct{})
	var start time.Time
	for i := range w {
		c, err := newMCConn(ap)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.close()
			runtime.LockOSThread()
			r := &results[i]
			r.lat = make([]time.Duration, 0, max(*n, 1<<15))
			rnd := rand.New(rand.NewPCG(uint64(i), 42))
			<-startGate
			for op := 0; *n <= 0 || op < *n; op++ {
				key := names[rnd.IntN(len(names))]
				t := time.Now()
				var hit bool
				var err error
				isSet := op%(sets+gets) < sets
				if isSet {
					err = c.set(key, value)
				} else {
					hit, err = c.get(key)
				}
				now := time.Now()
				if err != nil {
					// The connection's state is unknown: this worker stops.
					r.errs++
					r.firstErr = err
					return
				}
				r.lat = append(r.lat, now.Sub(t))
				switch {
				case isSet:
					r.sets++
				case hit:
					r.gets++
					r.hits++
				default:
					r.gets++
					r.misses++
				}
				if *duration > 0 && now.Sub(start) >= *duration {
					return
				}
			}
		}()
	}
	res := mcResult{Mode: "memcached", Addr: ap.String(), Conns: w, Keys: *keys, ValueSize: *size, Ratio: *ratio,
		CPUStatStart: cpuStatLine()}
	start = time.Now()
	close(startGate)
	wg.Wait()
	el := time.Since(start)
	res.CPUStatEnd = cpuStatLine()
	var lat []time.Duration
	for _, r := range results {
		lat = append(lat, r.lat...)
		res.Sets += r.sets
		res.Gets += r.gets
		res.Hits += r.hits
		res.Misses += r.misses
		res.Errors += r.errs
		if r.firstErr != nil && res.FirstError == "" {
			res.FirstError = r.firstErr.Error()
		}
	}
	res.Ops = len(lat)
	res.Seconds = el.Seconds()
	res.OpsPerSec = float64(len(lat)) / el.Seconds()
	res.latencyStats = summarize(lat)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return err
	}
	if res.Errors > 0 {
		return fmt.Errorf("memcached: %d of %d connections failed: %s", res.Errors, w, res.FirstError)
	}
	return nil
}

// mcConn is a blocking memcached text-protocol connection.
type mcConn struct {
	fd  int
	rd  *bufio.Reader
	req []byte
}

func newMCConn(ap netip.AddrPort) (*mcConn, error) {
	fd, err := dialBlocking(ap)
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	return &mcConn{fd: fd, rd: bufio.NewReaderSize(fdReader(fd), 64<<10)}, nil
}

func (c *mcConn) close() { unix.Close(c.fd) }

// set stores value under key: "set <key> 0 0 <bytes>\r\n<value>\r\n",
// answered "STORED\r\n".
func (c *mcConn) set(key string, value []byte) error {
	c.req = fmt.Appendf(c.req[:0], "set %s 0 0 %d\r\n", key, len(value))
	c.req = append(append(c.req, value...), "\r\n"...)
	if err := writeAll(c.fd, c.req); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	line, err := c.line()
	if err != nil {
		return err
	}
	if line != "STORED" {
		return fmt.Errorf("set %s: %q", key, line)
	}
	return nil
}

// get fetches key: "get <key>\r\n", answered by "VALUE <key> <flags>
// <bytes>\r\n<data>\r\n" (absent on a miss), then "END\r\n".
func (c *mcConn) get(key string) (hit bool, err error) {
	c.req = append(append(append(c.req[:0], "get "...), key...), "\r\n"...)
	if err := writeAll(c.fd, c.req); err != nil {
		return false, fmt.Errorf("send: %w", err)
	}
	for {
		line, err := c.line()
		if err != nil {
			return false, err
		}
		if line == "END" {
			return hit, nil
		}
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "VALUE" {
			return false, fmt.Errorf("get %s: %q", key, line)
		}
		size, err := strconv.Atoi(f[3])
		if err != nil || size < 0 {
			return false, fmt.Errorf("get %s: %q", key, line)
		}
		if _, err := c.rd.Discard(size + 2); err != nil {
			return false, fmt.Errorf("receive: %w", err)
		}
		hit = true
	}
}

// line reads one "\r\n"-terminated line.
func (c *mcConn) line() (string, error) {
	b, err := c.rd.ReadSlice('\n')
	if err != nil {
		return "", fmt.Errorf("receive: %w", err)
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), nil
}

// fdReader reads a blocking socket with read(2).
type fdReader int

func (f fdReader) Read(b []byte) (int, error) {
	n, err := readRetry(int(f), b)
	switch {
	case err != nil:
		return 0, err
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}
