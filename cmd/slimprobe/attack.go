package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/slimnet/slim/internal/bench/wire"
	"golang.org/x/sys/unix"
)

// attack does, from inside a fast-path container, what a hostile tenant
// would try with the host sockets it is given and with the host it sits
// on, and prints one JSON object: each attempt's name and its result ("ok"
// or the errno's name). The lab's hostile test says which results are
// right. -vip is a published listener (the socket is swapped); -store is
// an address of the cluster's store (or any control-plane port);
// -hostport is the listener's host port on its host's underlay address.
func attack(args []string) error {
	fs := flag.NewFlagSet("attack", flag.ExitOnError)
	vip := fs.String("vip", "", "a published listener's virtual address (slimprobe serve)")
	store := fs.String("store", "", "a control-plane address to try (host:port)")
	hostPort := fs.String("hostport", "", "the listener's host port, underlay address:port, for the sockaddr race")
	races := fs.Int("races", 300, "connects while another thread rewrites the sockaddr")
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
	// Another process of the container, handed the socket over a Unix
	// socket, tries what this one does below.
	passed, err := attackPassed(s)
	if err != nil {
		return err
	}
	for k, v := range passed {
		res["passed-"+k] = v
	}
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
	try("traffic-after-attacks", exchange(s))
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

	if *hostPort != "" {
		hp, err := netip.ParseAddrPort(*hostPort)
		if err != nil {
			return err
		}
		maps.Copy(res, sockaddrRace(ap, hp, *races))
	}

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

// exchange checks that s still carries its own connection to slimprobe
// serve: the report line the server sent on accept, then the count of
// what s sends before it half-closes.
func exchange(s int) error {
	if _, err := unix.Write(s, []byte("hello")); err != nil {
		return err
	}
	if err := unix.Shutdown(s, unix.SHUT_WR); err != nil {
		return err
	}
	d, err := unix.Dup(s)
	if err != nil {
		return err
	}
	// Bounded: a blocking socket takes no deadline from os.File.
	unix.SetsockoptTimeval(d, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	f := os.NewFile(uintptr(d), "conn")
	defer f.Close()
	r := bufio.NewReader(f)
	var rep wire.ConnReport
	line, err := r.ReadBytes('\n')
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, &rep); err != nil {
		return fmt.Errorf("report line %q: %w", line, err)
	}
	count, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if count != "5\n" {
		return fmt.Errorf("the server counted %q bytes, want 5", count)
	}
	return nil
}

// attackPassed hands s to a child process over a Unix socket (SCM_RIGHTS)
// and returns what the child's attempts on it gave.
func attackPassed(s int) (map[string]string, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	child := os.NewFile(uintptr(pair[1]), "child")
	cmd := exec.Command(self, "attack-passed")
	cmd.ExtraFiles = []*os.File{child} // fd 3
	cmd.Stderr = os.Stderr
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		child.Close()
		unix.Close(pair[0])
		return nil, err
	}
	child.Close()
	err = unix.Sendmsg(pair[0], []byte{0}, unix.UnixRights(s), nil, 0)
	unix.Close(pair[0])
	if werr := cmd.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("attack-passed: %w", werr)
	}
	if err != nil {
		return nil, err
	}
	res := map[string]string{}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("attack-passed: %q: %w", out.Bytes(), err)
	}
	return res, nil
}

// attackPassedChild is the child of attackPassed: it takes the socket
// from fd 3 and tries to point it elsewhere and to mark or bind it.
func attackPassedChild([]string) error {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(3, buf, oob, 0)
	if err != nil {
		return fmt.Errorf("recvmsg: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("no socket received (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return fmt.Errorf("no socket received (%v)", err)
	}
	s := fds[0]
	res := map[string]string{}
	try := func(name string, err error) { res[name] = errName(err) }
	other := &unix.SockaddrInet4{Port: 22, Addr: [4]byte{127, 0, 0, 1}}
	try("connect-elsewhere", unix.Connect(s, other))
	try("bind", unix.Bind(s, &unix.SockaddrInet4{}))
	try("listen", unix.Listen(s, 1))
	try("setsockopt-SO_MARK", unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_MARK, 1))
	try("setsockopt-SO_BINDTODEVICE", unix.SetsockoptString(s, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "lo"))
	unspec := unix.RawSockaddr{Family: unix.AF_UNSPEC}
	_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(s), uintptr(unsafe.Pointer(&unspec)), unsafe.Sizeof(unspec))
	try("disconnect", errno(e))
	return json.NewEncoder(os.Stdout).Encode(res)
}

// sockaddrRace connects n times to one sockaddr buffer that another
// thread keeps rewriting between vip (a published listener) and hostPort
// (the same listener's host port, which a container must not reach
// directly): whatever the broker read and decided, the kernel must not
// connect a container socket to the host port. It reports how many
// connects ended at the listener ("race-vip": swapped, or on the overlay
// when the broker read the host port and the kernel the listener), at the
// host port ("race-hostport", must be 0), refused by the host port's
// filter ("race-refused-host") or by the guard ("race-refused-guard"),
// reset at once ("race-reset") or otherwise ("race-other", with
// "race-other-kinds").
func sockaddrRace(vip, hostPort netip.AddrPort, n int) map[string]string {
	// The family, port and address are the first 8 bytes of a
	// sockaddr_in: one aligned 8-byte store switches all three at once.
	word := func(ap netip.AddrPort) uint64 {
		var raw unix.RawSockaddrInet4
		raw.Family = unix.AF_INET
		p := (*[2]byte)(unsafe.Pointer(&raw.Port))
		p[0], p[1] = byte(ap.Port()>>8), byte(ap.Port())
		raw.Addr = ap.Addr().As4()
		return *(*uint64)(unsafe.Pointer(&raw))
	}
	a, b := word(vip), word(hostPort)
	var buf [2]uint64 // a sockaddr_in, 8-byte aligned
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		for i := 0; !stop.Load(); i++ {
			if i&1 == 0 {
				atomic.StoreUint64(&buf[0], a)
			} else {
				atomic.StoreUint64(&buf[0], b)
			}
		}
	}()
	counts := map[string]int{}
	others := map[string]int{} // what the "other" outcomes were
	for range n {
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			counts["race-other"]++
			continue
		}
		// Bounded: a dropped SYN must not hang the probe.
		unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{Sec: 2})
		_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(s), uintptr(unsafe.Pointer(&buf[0])), unix.SizeofSockaddrInet4)
		if e == unix.EINTR {
			// A signal (Go's runtime sends them) ended the wait, not the
			// connect, which goes on: wait for its end.
			e = connectResult(s)
		}
		switch {
		// Refused by the listener's host: a reset from its host-port
		// filter (the broker read the host port and let the kernel
		// connect the container socket).
		case e == unix.ECONNREFUSED:
			counts["race-refused-host"]++
		// Refused by the guard: the broker read the listener and swapped
		// in a host socket, the kernel read the host port, and the
		// permit names another address.
		case e == unix.EPERM:
			counts["race-refused-guard"]++
		case e != 0:
			counts["race-other"]++
			others[unix.ErrnoName(e)]++
		default:
			switch peer, err := unix.Getpeername(s); {
			case err == unix.ENOTCONN:
				// Connected, and reset before getpeername: no bytes.
				counts["race-reset"]++
			case err != nil:
				counts["race-other"]++
				others["getpeername "+errName(err)]++
			case sockaddrString(peer) == vip.String():
				counts["race-vip"]++
			case sockaddrString(peer) == hostPort.String():
				counts["race-hostport"]++
			default:
				counts["race-other"]++
				others["peer "+sockaddrString(peer)]++
			}
		}
		unix.Close(s)
	}
	stop.Store(true)
	<-done
	res := map[string]string{}
	for _, k := range []string{"race-vip", "race-hostport", "race-refused-host", "race-refused-guard", "race-reset", "race-other"} {
		res[k] = strconv.Itoa(counts[k])
	}
	if len(others) > 0 {
		res["race-other-kinds"] = fmt.Sprint(others)
	}
	return res
}

// connectResult waits up to 2 s for a connect in progress on s to end and
// returns its errno (0: connected).
func connectResult(s int) unix.Errno {
	fds := []unix.PollFd{{Fd: int32(s), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(fds, 2000)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err.(unix.Errno)
		}
		if n == 0 {
			return unix.ETIMEDOUT
		}
		break
	}
	v, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err.(unix.Errno)
	}
	return unix.Errno(v)
}
