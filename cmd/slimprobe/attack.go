package main

import (
	"encoding/json"
	"errors"
	"flag"
	"net"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// attack does, from inside a fast-path container, what a hostile tenant
// would try with the host sockets it is given and with the host it sits
// on, and prints one JSON object: each attempt's name and its result ("ok"
// or the errno's name). The lab's hostile test says which results are
// right. -vip is a published listener (the socket is swapped); -store is
// an address of the cluster's store (or any control-plane port).
func attack(args []string) error {
	fs := flag.NewFlagSet("attack", flag.ExitOnError)
	vip := fs.String("vip", "", "a published listener's virtual address")
	store := fs.String("store", "", "a control-plane address to try (host:port)")
	fs.Parse(args)
	ap, err := netip.ParseAddrPort(*vip)
	if err != nil {
		return err
	}
	res := map[string]string{}
	try := func(name string, err error) { res[name] = errName(err) }
	fam, sa := sockaddrOf(ap)
	other := &unix.SockaddrInet4{Port: 22, Addr: [4]byte{127, 0, 0, 1}}

	s, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	try("connect", unix.Connect(s, sa))
	try("connect-elsewhere", unix.Connect(s, other))
	try("bind", unix.Bind(s, &unix.SockaddrInet4{}))
	try("listen", unix.Listen(s, 1))
	try("setsockopt-SO_MARK", unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_MARK, 1))
	try("setsockopt-SO_BINDTODEVICE", unix.SetsockoptString(s, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "lo"))
	try("setsockopt-SO_PRIORITY-7", unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PRIORITY, 7))
	try("setsockopt-IP_TOS-EF", unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_TOS, 0xb8))
	big := make([]byte, 3*os.Getpagesize())
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(s), unix.IPPROTO_IP, unix.IP_TOS, uintptr(unsafe.Pointer(&big[0])), uintptr(len(big)), 0)
	try("setsockopt-IP_TOS-big-optlen", errno(e))
	try("setsockopt-TCP_NODELAY", unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1))
	try("sendto-fastopen-elsewhere", unix.Sendto(s, []byte("x"), unix.MSG_FASTOPEN, other))
	unspec := unix.RawSockaddr{Family: unix.AF_UNSPEC}
	_, _, e = unix.Syscall(unix.SYS_CONNECT, uintptr(s), uintptr(unsafe.Pointer(&unspec)), unsafe.Sizeof(unspec))
	try("disconnect", errno(e))
	try("connect-after-disconnect", unix.Connect(s, other))
	try("listen-after-disconnect", unix.Listen(s, 1))
	unix.Close(s)

	// io_uring would connect and bind around the traps.
	var params [120]byte
	_, _, e = unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
	try("io_uring_setup", errno(e))

	if *store != "" {
		c, err := net.DialTimeout("tcp", *store, 2*time.Second)
		if err == nil {
			c.Close()
		}
		try("dial-store", err)
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

func errno(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// errName is "ok", an errno's name, or "timeout" / the error text.
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return err.Error()
}
