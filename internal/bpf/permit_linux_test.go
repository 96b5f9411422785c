//go:build linux && (amd64 || arm64)

package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/poll"
	"golang.org/x/sys/unix"
)

// permitCase is one family of application socket.
type permitCase struct {
	name  string
	v6    bool
	local string // the container's address getsockname shows
	want  string // the virtual destination the application names
}

var permitCases = []permitCase{
	{name: "ipv4", local: "10.200.0.7", want: "10.200.1.9:80"},
	{name: "ipv6", v6: true, local: "fd00:200::7", want: "[fd00:200::9]:80"},
	{name: "v4mapped", v6: true, local: "10.200.0.7", want: "[::ffff:10.200.1.9]:80"},
}

// TestPermit: a host socket armed with ArmConn connects once, from a
// process outside slimd's cgroup (the test), to exactly the destination
// slimd approved: the program binds it to a free port of the blocks and
// sends it to the host listener. Nothing else passes, before or after.
func TestPermit(t *testing.T) {
	env := newEnv(t)
	p := env.load(t)
	c := startChild(t, env.cgroup)
	hostIP := underlayIP
	const block1, block2 = 40960, 41216 // aligned to 1<<testBlockBits
	inBlocks := func(port uint16) bool {
		return port >= block1 && port < block2+1<<testBlockBits
	}
	for i, tc := range permitCases {
		t.Run(tc.name, func(t *testing.T) {
			dst := netip.AddrPortFrom(hostIP, uint16(7200+i))
			ln := c.fd(t, "listen %s", dst)
			want := netip.MustParseAddrPort(tc.want)
			// Not published yet: the program refuses it, permit or not.
			unpub := c.fd(t, "socket %s", map[bool]string{false: "4", true: "6"}[tc.v6])
			check(t, p.ArmConn(unpub, Conn{Local: netip.MustParseAddr(tc.local), Peer: want, Want: want, Dst: dst, Src: hostIP,
				Blocks: [MaxBlocks]uint16{block1}, NBlocks: 1}))
			if err := unix.Connect(unpub, sockaddr(want, tc.v6)); !errors.Is(err, unix.EPERM) {
				t.Errorf("connect to an unpublished listener: got %v, want EPERM", err)
			}
			check(t, p.PutListener(dst.Addr(), dst.Port(), netip.AddrPortFrom(netip.MustParseAddr("10.200.1.9"), 80)))
			local := netip.MustParseAddr(tc.local)
			fam := map[bool]string{false: "4", true: "6"}[tc.v6]
			arm := func() int {
				t.Helper()
				fd := c.fd(t, "socket %s", fam)
				check(t, p.ArmConn(fd, Conn{Local: local, Peer: want, Want: want, Dst: dst, Src: hostIP,
					Blocks: [MaxBlocks]uint16{block1, block2}, NBlocks: 2}))
				return fd
			}
			state := func(fd int) ConnState {
				t.Helper()
				s, err := p.ConnState(fd)
				check(t, err)
				return s
			}
			shown := func(a netip.AddrPort) netip.AddrPort {
				if tc.v6 && a.Addr().Is4() {
					return netip.AddrPortFrom(netip.AddrFrom16(a.Addr().As16()), a.Port())
				}
				return a
			}

			s1 := arm()
			other := netip.AddrPortFrom(want.Addr(), want.Port()+1)
			if err := unix.Connect(s1, sockaddr(other, tc.v6)); !errors.Is(err, unix.EPERM) {
				t.Errorf("connect elsewhere: got %v, want EPERM", err)
			}
			if s := state(s1); s != ConnArmed {
				t.Errorf("after a refused connect: state %d, want armed", s)
			}
			if err := unix.Connect(s1, sockaddr(want, tc.v6)); err != nil {
				t.Fatalf("connect to the approved destination: %v", err)
			}
			if s := state(s1); s != ConnUsed {
				t.Errorf("after connect: state %d, want used", s)
			}
			name := getsockname(t, s1)
			if name.Addr() != shown(netip.AddrPortFrom(local, 0)).Addr() || !inBlocks(name.Port()) {
				t.Errorf("getsockname %s: want %s and a port of the blocks", name, local)
			}
			want2 := shown(want)
			if got := getpeername(t, s1); got != want2 {
				t.Errorf("getpeername %s, want %s", got, want2)
			}
			_, from := accept4(t, ln)
			if from.Addr().Unmap() != hostIP || from.Port() != name.Port() {
				t.Errorf("listener accepted %s, want %s:%d", from, hostIP, name.Port())
			}
			if n := p.PortsInUse(block1) + p.PortsInUse(block2); n != 1 {
				t.Errorf("ports in use %d, want 1", n)
			}
			conns, err := inNetnsOf(s1, p.Conns)
			check(t, err)
			k := ConnKey{Local: netip.AddrPortFrom(hostIP, name.Port()), Remote: dst}
			if r, ok := conns[k]; !ok || time.Since(r.Since) < 0 || time.Since(r.Since) > time.Minute || r.Peer != netip.AddrPortFrom(want.Addr().Unmap(), want.Port()) {
				t.Errorf("record %+v (listed %v), want connected a moment ago to %v; listed: %v", r, ok, netip.AddrPortFrom(want.Addr().Unmap(), want.Port()), conns)
			}

			// The busy port is skipped: point the blocks' cursor at it.
			setCursor(t, p, block1, uint32(name.Port()-block1))
			s2 := arm()
			if err := unix.Connect(s2, sockaddr(want, tc.v6)); err != nil {
				t.Fatalf("second connect: %v", err)
			}
			if p2 := getsockname(t, s2).Port(); p2 == name.Port() || !inBlocks(p2) {
				t.Errorf("second socket's port %d: want another port of the blocks than %d", p2, name.Port())
			}
			accept4(t, ln)
			// Released with its last reference (the child closes its copy
			// after sending it, perhaps after this): its port is given
			// back.
			unix.Close(s2)
			poll.Until(t, 5*time.Second, func() error {
				if n := p.PortsInUse(block1) + p.PortsInUse(block2); n != 1 {
					return fmt.Errorf("ports in use after a close: %d, want 1", n)
				}
				return nil
			})

			// Used once: the kernel answers a connected socket itself, and a
			// disconnected one (connect(AF_UNSPEC), which no hook sees) can
			// never connect or bind again.
			if err := unix.Connect(s1, sockaddr(want, tc.v6)); !errors.Is(err, unix.EISCONN) {
				t.Errorf("connect again: got %v, want EISCONN", err)
			}
			check(t, disconnect(s1))
			for _, to := range []netip.AddrPort{want, other, dst} {
				if err := unix.Connect(s1, sockaddr(shown(to), tc.v6)); !errors.Is(err, unix.EPERM) {
					t.Errorf("connect to %s after a disconnect: got %v, want EPERM", to, err)
				}
			}
			if err := unix.Bind(s1, sockaddr(shown(netip.AddrPortFrom(hostIP, 0)), tc.v6)); !errors.Is(err, unix.EPERM) {
				t.Errorf("bind after a disconnect: got %v, want EPERM", err)
			}
			if err := fastOpen(s1, shown(want)); !errors.Is(err, unix.EPERM) {
				t.Errorf("fast open after a disconnect: got %v, want EPERM", err)
			}
			// No hook sees listen(); the broker refuses it on host sockets
			// (seccomp). Underneath, Linux refuses to listen on a socket
			// that was ever connected: record that this still holds.
			if err := unix.Listen(s1, 1); err == nil {
				t.Errorf("listen after a disconnect succeeded: a container could serve on a host port")
			}
			// A fast-open send is a connect: an armed socket lets it
			// through only to its destination.
			s3 := arm()
			if err := fastOpen(s3, shown(other)); !errors.Is(err, unix.EPERM) {
				t.Errorf("fast open elsewhere: got %v, want EPERM", err)
			}
		})
	}
}

// A permit slimd was tricked into (a forged store record) still cannot
// reach the host's own loopback, even with the listener map saying so.
func TestPermitNotLoopback(t *testing.T) {
	env := newEnv(t)
	p := env.load(t)
	c := startChild(t, env.cgroup)
	lo := netip.MustParseAddrPort("127.0.0.1:7400")
	c.fd(t, "listen %s", lo)
	check(t, p.PutListener(lo.Addr(), lo.Port(), netip.MustParseAddrPort("10.200.1.9:80")))
	want := netip.MustParseAddrPort("10.200.1.9:80")
	fd := c.fd(t, "socket 4")
	check(t, p.ArmConn(fd, Conn{Local: netip.MustParseAddr("10.200.0.7"), Peer: want, Want: want, Dst: lo, Src: lo.Addr(),
		Blocks: [MaxBlocks]uint16{40960}, NBlocks: 1}))
	if err := unix.Connect(fd, sockaddr(want, false)); !errors.Is(err, unix.EPERM) {
		t.Errorf("connect to loopback: got %v, want EPERM", err)
	}
}

// TestPermitExhausted: when every port of the blocks has a live connection
// to the destination, the connect fails with EADDRNOTAVAIL (as host
// networking does when its ephemeral ports run out) instead of reusing a
// 4-tuple, and succeeds again once a port is free.
func TestPermitExhausted(t *testing.T) {
	env := newEnv(t)
	cfg := env.config()
	cfg.BlockBits = 2 // 4 ports
	p, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c := startChild(t, env.cgroup)
	hostIP := underlayIP
	dst := netip.AddrPortFrom(hostIP, 7300)
	ln := c.fd(t, "listen %s", dst)
	check(t, p.PutListener(dst.Addr(), dst.Port(), netip.MustParseAddrPort("10.200.1.9:80")))
	want := netip.MustParseAddrPort("10.200.1.9:80")
	const block = 40960
	connect := func() (int, error) {
		fd := c.fd(t, "socket 4")
		check(t, p.ArmConn(fd, Conn{Local: netip.MustParseAddr("10.200.0.7"), Peer: want, Want: want, Dst: dst, Src: hostIP,
			Blocks: [MaxBlocks]uint16{block}, NBlocks: 1}))
		return fd, unix.Connect(fd, sockaddr(want, false))
	}
	var fds, accepted []int
	for i := range 4 {
		fd, err := connect()
		if err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		acc, _ := accept4(t, ln)
		fds, accepted = append(fds, fd), append(accepted, acc)
	}
	if n := p.PortsInUse(block); n != 4 {
		t.Errorf("ports in use %d, want 4", n)
	}
	if _, err := connect(); !errors.Is(err, unix.EADDRNOTAVAIL) {
		t.Errorf("fifth connect: got %v, want EADDRNOTAVAIL", err)
	}
	// Both ends closed, the client first: its 4-tuple waits in
	// TIME_WAIT, which a bound connect may reuse.
	unix.Close(fds[2])
	unix.Close(accepted[2])
	if _, err := connect(); err != nil {
		t.Errorf("connect after a close: %v", err)
	}
}

// setCursor sets the next port index of the blocks starting at start.
func setCursor(t *testing.T, p *Programs, start uint16, v uint32) {
	t.Helper()
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	if _, err := p.ports.WriteAt(b[:], int64(start>>p.blockBits)*8); err != nil {
		t.Fatal(fmt.Errorf("set cursor: %w", err))
	}
}

// inNetnsOf runs fn in the network namespace of socket fd (the child's)
// on a locked thread, and moves the thread back. (A thread that exits
// would take the child with it: its Pdeathsig follows the thread that
// started it.)
func inNetnsOf[T any](fd int, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		var zero T
		runtime.LockOSThread()
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{zero, err}
			return
		}
		defer unix.Close(self)
		ns, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{zero, fmt.Errorf("SIOCGSKNS: %w", err)}
			return
		}
		defer unix.Close(ns)
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{zero, err}
			return
		}
		v, err := fn()
		if unix.Setns(self, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and dies with the goroutine
		done <- result{v, err}
	}()
	r := <-done
	return r.v, r.err
}
