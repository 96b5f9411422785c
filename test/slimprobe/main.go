// Command slimprobe is a test program for the fast path: a TCP server and
// client that report the addresses the application sees (getsockname,
// getpeername, accept's address) and move bytes. Built with CGO_ENABLED=0
// it is a static binary, which is one of the cases the fast path must
// cover (no LD_PRELOAD would reach it).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
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
	Err    string `json:"err,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: slimprobe serve|connect [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "connect":
		err = connect(os.Args[2:])
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
	family, sa := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	if ap.Addr().Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
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
	out := make(chan result, *conns)
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	for range *conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cl, sv := one(ap, *n, *blocking)
			out <- result{cl, sv}
		}()
	}
	go func() { wg.Wait(); close(out) }()
	enc := json.NewEncoder(os.Stdout)
	failed := 0
	for r := range out {
		if r.Client.Err != "" {
			failed++
		}
		enc.Encode(r)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d connections failed", failed, *conns)
	}
	return nil
}

func one(ap netip.AddrPort, n int64, blocking bool) (cl, sv Report) {
	var c net.Conn
	var err error
	if blocking {
		c, err = blockingDial(ap)
	} else {
		c, err = net.DialTimeout("tcp", ap.String(), 10*time.Second)
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
// then hands the socket to the Go runtime.
func blockingDial(ap netip.AddrPort) (net.Conn, error) {
	family, sa := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	if ap.Addr().Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
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
	f := os.NewFile(uintptr(fd), "conn")
	defer f.Close()
	return net.FileConn(f)
}
