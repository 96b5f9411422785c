package main

// The raw socket calls the modes share, and their addresses.

import (
	"fmt"
	"io"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// sockname is the address f (getsockname or getpeername) returns for fd,
// or the error.
func sockname(fd int, f func(int) (unix.Sockaddr, error)) string {
	sa, err := f(fd)
	if err != nil {
		return "error: " + err.Error()
	}
	return sockaddrString(sa)
}

// sockaddrString is an IP socket address as address:port.
func sockaddrString(sa unix.Sockaddr) string {
	switch v := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(v.Addr), uint16(v.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(v.Addr), uint16(v.Port)).String()
	}
	return fmt.Sprintf("%T", sa)
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

// dialBlocking connects a new blocking socket to ap with connect(2),
// after setOpts (nil for none). connect is restarted after EINTR.
func dialBlocking(ap netip.AddrPort, setOpts func(fd int) error) (int, error) {
	family, sa := sockaddrOf(ap)
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if setOpts != nil {
		if err := setOpts(fd); err != nil {
			unix.Close(fd)
			return -1, err
		}
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
