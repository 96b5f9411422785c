package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/bench/wire"
)

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
		rep := wire.ConnReport{Local: sockname(cfd, unix.Getsockname), Peer: sockname(cfd, unix.Getpeername),
			Accept: sockname(cfd, func(int) (unix.Sockaddr, error) { return csa, nil })}
		go handle(cfd, rep)
	}
}

func handle(fd int, rep wire.ConnReport) {
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
