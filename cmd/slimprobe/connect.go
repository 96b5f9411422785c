package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/bench/wire"
)

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
	timeout := fs.Duration("timeout", 10*time.Second, "give up a non-blocking connect after this long (a dropped SYN)")
	sport := fs.Int("sport", 0, "bind this source port before a non-blocking connect (0: the kernel picks)")
	fs.Parse(args)
	if *signals {
		stop := interrupter()
		defer stop()
	}
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil {
		return err
	}
	start := time.Now()
	out := make(chan wire.ConnectResult, *conns)
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	for range *conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cl, sv := one(ap, *n, *blocking, *keepIdle, *tos, *timeout, *sport)
			out <- wire.ConnectResult{Client: cl, Server: sv}
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
		enc.Encode(wire.ConnectSummary{Conns: *conns, Failed: failed, FirstError: firstErr, Seconds: time.Since(start).Seconds()})
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d connections failed", failed, *conns)
	}
	return nil
}

func one(ap netip.AddrPort, n int64, blocking bool, keepIdle, tos int, timeout time.Duration, sport int) (cl, sv wire.ConnReport) {
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
		var local net.Addr
		if sport != 0 {
			local = &net.TCPAddr{Port: sport}
		}
		d := net.Dialer{Timeout: timeout, LocalAddr: local, KeepAlive: -1, Control: func(_, _ string, rc syscall.RawConn) error {
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
	fd, err := dialBlocking(ap, setOpts)
	if err != nil {
		return nil, err
	}
	connected(fd)
	f := os.NewFile(uintptr(fd), "conn")
	defer f.Close()
	return net.FileConn(f)
}
