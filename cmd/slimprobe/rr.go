package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/bench/wire"
)

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
	fd, err := dialBlocking(ap, nil)
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
	res := wire.RRResult{Mode: "rr", Addr: ap.String(), Size: *size}
	el, c0, c1, err := timed(func(start time.Time) error {
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
		return nil
	})
	if err != nil {
		return err
	}
	res.CPUStart, res.CPUEnd = c0, c1
	res.Transactions = len(lat)
	res.Seconds = el.Seconds()
	res.TPS = float64(len(lat)) / el.Seconds()
	res.Latencies = summarize(lat)
	return json.NewEncoder(os.Stdout).Encode(res)
}
