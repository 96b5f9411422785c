package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/bench/wire"
)

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
	res := wire.CRRResult{Mode: "crr", Addr: ap.String(), Workers: w}
	el, c0, c1, err := timed(func(t time.Time) error {
		start = t
		close(startGate)
		wg.Wait()
		return nil
	})
	if err != nil {
		return err
	}
	res.CPUStart, res.CPUEnd = c0, c1
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
	fd, err := dialBlocking(ap, nil)
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
