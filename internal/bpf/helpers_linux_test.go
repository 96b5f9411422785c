//go:build linux && (amd64 || arm64)

package bpf

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/slimnet/slim/internal/testenv"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// childEnv makes the test binary act as the "slimd" child: a process inside
// the test cgroup, in a network namespace of its own, that creates sockets
// on the parent's request and passes them back with SCM_RIGHTS.
const childEnv = "SLIM_BPF_TEST_CHILD"

// childTimeout bounds one request to the child; every request is a few local
// syscalls.
const childTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

func randSuffix(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// cgroup2Mount finds the cgroup v2 mount point in /proc/self/mountinfo
// (/sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones).
func cgroup2Mount(t testing.TB) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fs := strings.Fields(post); len(fs) > 0 && fs[0] == "cgroup2" {
			if f := strings.Fields(pre); len(f) >= 5 {
				return f[4]
			}
		}
	}
	t.Fatal("no cgroup2 mount")
	return ""
}

// newCgroup creates a fresh cgroup for the test, removed in Cleanup (after
// the children in it have exited).
func newCgroup(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(cgroup2Mount(t), "slimtest-bpf-"+randSuffix(t))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Children are reaped before this runs; rmdir may still race
		// their final exit for a moment.
		var err error
		for range 100 {
			if err = os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("remove cgroup %s: %v", dir, err)
	})
	return dir
}

// newPinDir returns a fresh pin dir path on bpffs (Load creates it and
// mounts bpffs if needed); Cleanup unpins everything in it.
func newPinDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(bpfRoot, "slimtest-bpf-"+randSuffix(t))
	t.Cleanup(func() {
		if err := Unpin(dir); err != nil {
			t.Errorf("unpin %s: %v", dir, err)
		}
	})
	return dir
}

type testEnv struct {
	cgroup, pinDir string
}

func newEnv(t testing.TB) testEnv {
	t.Helper()
	testenv.RequireRoot(t)
	// Cleanups run last-in first-out: unpin, then remove the cgroup.
	cg := newCgroup(t)
	return testEnv{cgroup: cg, pinDir: newPinDir(t)}
}

func (e testEnv) config() Config {
	return Config{Cgroup: e.cgroup, PinDir: e.pinDir, BlockBits: testBlockBits}
}

func (e testEnv) load(t testing.TB) *Programs {
	t.Helper()
	p, err := Load(e.config())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

const testBlockBits = 8

// child is the parent's handle on a "slimd" child process.
type child struct {
	conn int // SOCK_SEQPACKET to the child
}

// startChild starts the test binary in cgroup dir and in a new network
// namespace with lo up.
func startChild(t testing.TB, cgroup string) *child {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	remote := os.NewFile(uintptr(pair[1]), "child-conn")
	cgfd, err := unix.Open(cgroup, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cgfd)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.ExtraFiles = []*os.File{remote} // fd 3
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWNET,
		UseCgroupFD: true, // clone3(CLONE_INTO_CGROUP): no window outside
		CgroupFD:    cgfd,
		Pdeathsig:   unix.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	remote.Close()
	c := &child{conn: pair[0]}
	t.Cleanup(func() {
		unix.Close(c.conn) // the child exits on EOF
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(childTimeout):
			cmd.Process.Kill()
			<-done
		}
	})
	if _, _, err := c.do("ping"); err != nil {
		t.Fatalf("child: %v", err)
	}
	return c
}

// do sends one request and returns the reply text and the fd passed with it
// (-1 if none).
func (c *child) do(format string, args ...any) (string, int, error) {
	req := fmt.Sprintf(format, args...)
	for {
		err := unix.Sendmsg(c.conn, []byte(req), nil, nil, 0)
		if err == nil {
			break
		}
		if err != unix.EINTR {
			return "", -1, err
		}
	}
	tv := unix.NsecToTimeval(childTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(c.conn, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return "", -1, err
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	var n, oobn int
	var err error
	for {
		// The runtime's signals (preemption, -race) interrupt the wait.
		n, oobn, _, _, err = unix.Recvmsg(c.conn, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return "", -1, fmt.Errorf("%s: %w", req, err)
	}
	fd := -1
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return "", -1, err
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err == nil && len(fds) > 0 {
				fd = fds[0]
			}
		}
	}
	reply := string(buf[:n])
	if rest, ok := strings.CutPrefix(reply, "err "); ok {
		if fd >= 0 {
			unix.Close(fd)
		}
		return "", -1, fmt.Errorf("%s: %s", req, rest)
	}
	return strings.TrimPrefix(strings.TrimPrefix(reply, "ok"), " "), fd, nil
}

// fd runs a request that returns a socket and registers its close with t.
func (c *child) fd(t testing.TB, format string, args ...any) int {
	t.Helper()
	_, fd, err := c.do(format, args...)
	if err != nil {
		t.Fatal(err)
	}
	if fd < 0 {
		t.Fatalf("%s: no fd", fmt.Sprintf(format, args...))
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// childMain serves requests on fd 3 until EOF.
func childMain() int {
	if err := loUp(); err != nil {
		fmt.Fprintln(os.Stderr, "child: lo up:", err)
		return 1
	}
	if err := addUnderlay(); err != nil {
		fmt.Fprintln(os.Stderr, "child: underlay address:", err)
		return 1
	}
	const conn = 3
	buf := make([]byte, 4096)
	for {
		n, _, _, _, err := unix.Recvmsg(conn, buf, nil, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return 0
		}
		reply, fd := childHandle(strings.Fields(string(buf[:n])))
		var oob []byte
		if fd >= 0 {
			oob = unix.UnixRights(fd)
		}
		if err := unix.Sendmsg(conn, []byte(reply), oob, nil, 0); err != nil {
			return 1
		}
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

func childHandle(req []string) (string, int) {
	fail := func(err error) (string, int) { return "err " + err.Error(), -1 }
	if len(req) == 0 {
		return "err empty request", -1
	}
	switch {
	case req[0] == "ping":
		return "ok", -1
	case req[0] == "socket" && len(req) == 2:
		fd, err := tcpSocket(req[1] == "6")
		if err != nil {
			return fail(err)
		}
		return "ok", fd
	case req[0] == "listen" && (len(req) == 2 || len(req) == 3):
		ap, err := netip.ParseAddrPort(req[1])
		if err != nil {
			return fail(err)
		}
		backlog := 64
		if len(req) == 3 {
			if backlog, err = strconv.Atoi(req[2]); err != nil {
				return fail(err)
			}
		}
		fd, err := listenTCP(ap, backlog)
		if err != nil {
			return fail(err)
		}
		return "ok", fd
	case req[0] == "connect" && len(req) == 3:
		remote, err := netip.ParseAddrPort(req[2])
		if err != nil {
			return fail(err)
		}
		local := netip.AddrPort{}
		if req[1] != "-" {
			if local, err = netip.ParseAddrPort(req[1]); err != nil {
				return fail(err)
			}
		}
		fd, err := connectTCP(local, remote)
		if err != nil {
			return fail(err)
		}
		return "ok", fd
	case req[0] == "connecting" && len(req) == 2:
		// A non-blocking connect left in progress.
		remote, err := netip.ParseAddrPort(req[1])
		if err != nil {
			return fail(err)
		}
		fd, err := tcpSocket(is6(remote))
		if err != nil {
			return fail(err)
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return fail(err)
		}
		if err := unix.Connect(fd, sockaddr(remote, is6(remote))); !errors.Is(err, unix.EINPROGRESS) {
			unix.Close(fd)
			return fail(fmt.Errorf("connect: got %v, want EINPROGRESS", err))
		}
		return "ok", fd
	case req[0] == "guard" && len(req) == 2:
		remote, err := netip.ParseAddrPort(req[1])
		if err != nil {
			return fail(err)
		}
		if err := slimdMayDoAll(remote); err != nil {
			return fail(err)
		}
		return "ok", -1
	}
	return "err unknown request " + strings.Join(req, " "), -1
}

// underlayIP is a host address of the child's namespace that is not
// loopback (the connect program refuses loopback destinations), on lo.
var underlayIP = netip.MustParseAddr("192.0.2.1")

func addUnderlay() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: underlayIP.AsSlice(), Mask: net.CIDRMask(32, 32)}})
}

func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// is6 reports whether ap needs an AF_INET6 socket (IPv6, or v4-mapped).
func is6(ap netip.AddrPort) bool { return !ap.Addr().Is4() }

func tcpSocket(v6 bool) (int, error) {
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	return unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
}

func sockaddr(ap netip.AddrPort, v6 bool) unix.Sockaddr {
	if v6 {
		return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
}

func fromSockaddr(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

func listenTCP(ap netip.AddrPort, backlog int) (int, error) {
	v6 := is6(ap)
	fd, err := tcpSocket(v6)
	if err != nil {
		return -1, err
	}
	if err := bindReuse(fd, ap, v6); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func connectTCP(local, remote netip.AddrPort) (int, error) {
	v6 := is6(remote)
	fd, err := tcpSocket(v6)
	if err != nil {
		return -1, err
	}
	if local.IsValid() {
		if err := bindReuse(fd, local, v6); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if err := unix.Connect(fd, sockaddr(remote, v6)); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func bindReuse(fd int, ap netip.AddrPort, v6 bool) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return err
	}
	return unix.Bind(fd, sockaddr(ap, v6))
}

// disconnect is connect(AF_UNSPEC), which x/sys/unix has no Sockaddr for.
func disconnect(fd int) error {
	sa := unix.RawSockaddr{Family: unix.AF_UNSPEC}
	_, _, errno := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	if errno != 0 {
		return errno
	}
	return nil
}

// fastOpen is sendto(MSG_FASTOPEN): an implicit connect with data.
func fastOpen(fd int, remote netip.AddrPort) error {
	return unix.Sendto(fd, []byte("x"), unix.MSG_FASTOPEN, sockaddr(remote, is6(remote)))
}

// sockopt is one setsockopt call of the guard tests.
type sockopt struct {
	name        string
	level, opt  int
	val         []byte
	v4, v6      bool // socket families it applies to
	kernelMayNo bool // the kernel itself may refuse the value (not EPERM)
}

func intval(v int) []byte {
	b := make([]byte, 4)
	*(*int32)(unsafe.Pointer(&b[0])) = int32(v)
	return b
}

func (o sockopt) set(fd int) error {
	var p unsafe.Pointer
	if len(o.val) > 0 {
		p = unsafe.Pointer(&o.val[0])
	}
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(o.level), uintptr(o.opt),
		uintptr(p), uintptr(len(o.val)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// bigval is an optval beyond one page, which the sockopt hook cannot copy.
func bigval(v int) []byte {
	b := make([]byte, 3*os.Getpagesize())
	copy(b, intval(v))
	return b
}

// dangerousOpts must fail with EPERM for anyone but slimd.
var dangerousOpts = []sockopt{
	{name: "SO_BINDTODEVICE", level: unix.SOL_SOCKET, opt: unix.SO_BINDTODEVICE, val: []byte("lo\x00"), v4: true, v6: true},
	{name: "SO_BINDTODEVICE big", level: unix.SOL_SOCKET, opt: unix.SO_BINDTODEVICE, val: append([]byte("lo\x00"), make([]byte, 2*4096)...), v4: true, v6: true},
	{name: "SO_BINDTOIFINDEX", level: unix.SOL_SOCKET, opt: unix.SO_BINDTOIFINDEX, val: intval(1), v4: true, v6: true},
	{name: "SO_MARK", level: unix.SOL_SOCKET, opt: unix.SO_MARK, val: intval(42), v4: true, v6: true},
	{name: "SO_PRIORITY 7", level: unix.SOL_SOCKET, opt: unix.SO_PRIORITY, val: intval(7), v4: true, v6: true},
	{name: "SO_RCVBUFFORCE", level: unix.SOL_SOCKET, opt: unix.SO_RCVBUFFORCE, val: intval(1 << 20), v4: true, v6: true},
	{name: "SO_SNDBUFFORCE", level: unix.SOL_SOCKET, opt: unix.SO_SNDBUFFORCE, val: intval(1 << 20), v4: true, v6: true},
	{name: "SO_REUSEPORT", level: unix.SOL_SOCKET, opt: unix.SO_REUSEPORT, val: intval(1), v4: true, v6: true},
	{name: "SO_BUSY_POLL", level: unix.SOL_SOCKET, opt: unix.SO_BUSY_POLL, val: intval(50), v4: true, v6: true},
	{name: "SO_PREFER_BUSY_POLL", level: unix.SOL_SOCKET, opt: unix.SO_PREFER_BUSY_POLL, val: intval(1), v4: true, v6: true},
	{name: "IP_TOS EF", level: unix.SOL_IP, opt: unix.IP_TOS, val: intval(0xb8), v4: true},
	{name: "IP_TOS CS7 byte", level: unix.SOL_IP, opt: unix.IP_TOS, val: []byte{0xe0}, v4: true},
	{name: "IP_TRANSPARENT", level: unix.SOL_IP, opt: unix.IP_TRANSPARENT, val: intval(1), v4: true, v6: true},
	{name: "IP_FREEBIND", level: unix.SOL_IP, opt: unix.IP_FREEBIND, val: intval(1), v4: true, v6: true},
	{name: "IP_UNICAST_IF", level: unix.SOL_IP, opt: unix.IP_UNICAST_IF, val: intval(0), v4: true},
	{name: "IP_OPTIONS", level: unix.SOL_IP, opt: unix.IP_OPTIONS, val: []byte{1, 1, 1, 1}, v4: true},
	{name: "IP_XFRM_POLICY", level: unix.SOL_IP, opt: unix.IP_XFRM_POLICY, val: make([]byte, 64), v4: true, kernelMayNo: true},
	{name: "IPV6_TCLASS CS6", level: unix.SOL_IPV6, opt: unix.IPV6_TCLASS, val: intval(0xc0), v6: true},
	{name: "IPV6_TRANSPARENT", level: unix.SOL_IPV6, opt: unix.IPV6_TRANSPARENT, val: intval(1), v6: true},
	{name: "IPV6_FREEBIND", level: unix.SOL_IPV6, opt: unix.IPV6_FREEBIND, val: intval(1), v6: true},
	{name: "IPV6_UNICAST_IF", level: unix.SOL_IPV6, opt: unix.IPV6_UNICAST_IF, val: intval(0), v6: true},
	{name: "IPV6_RTHDR", level: unix.SOL_IPV6, opt: unix.IPV6_RTHDR, val: make([]byte, 8), v6: true, kernelMayNo: true},
	{name: "TCP_REPAIR", level: unix.SOL_TCP, opt: unix.TCP_REPAIR, val: intval(1), v4: true, v6: true},
	// Beyond a page the program sees a copy the caller may change before
	// the kernel reads the value again: refused even with a harmless value.
	{name: "SO_PRIORITY 0 big optval", level: unix.SOL_SOCKET, opt: unix.SO_PRIORITY, val: bigval(0), v4: true, v6: true},
	{name: "IP_TOS 0 big optval", level: unix.SOL_IP, opt: unix.IP_TOS, val: bigval(0), v4: true},
	{name: "IPV6_TCLASS 0 big optval", level: unix.SOL_IPV6, opt: unix.IPV6_TCLASS, val: bigval(0), v6: true},
}

// harmlessOpts must work for everyone.
var harmlessOpts = []sockopt{
	{name: "TCP_NODELAY", level: unix.SOL_TCP, opt: unix.TCP_NODELAY, val: intval(1), v4: true, v6: true},
	{name: "TCP_NODELAY big optval", level: unix.SOL_TCP, opt: unix.TCP_NODELAY, val: bigval(1), v4: true, v6: true},
	{name: "SO_RCVBUF", level: unix.SOL_SOCKET, opt: unix.SO_RCVBUF, val: intval(1 << 16), v4: true, v6: true},
	{name: "SO_SNDBUF big optval", level: unix.SOL_SOCKET, opt: unix.SO_SNDBUF, val: bigval(1 << 16), v4: true, v6: true},
	{name: "SO_KEEPALIVE", level: unix.SOL_SOCKET, opt: unix.SO_KEEPALIVE, val: intval(1), v4: true, v6: true},
	{name: "SO_PRIORITY 6", level: unix.SOL_SOCKET, opt: unix.SO_PRIORITY, val: intval(6), v4: true, v6: true},
	{name: "SO_REUSEADDR", level: unix.SOL_SOCKET, opt: unix.SO_REUSEADDR, val: intval(1), v4: true, v6: true},
	{name: "TCP_KEEPIDLE", level: unix.SOL_TCP, opt: unix.TCP_KEEPIDLE, val: intval(30), v4: true, v6: true},
	{name: "TCP_CONGESTION", level: unix.SOL_TCP, opt: unix.TCP_CONGESTION, val: []byte("cubic"), v4: true, v6: true},
	{name: "IP_TOS AF21", level: unix.SOL_IP, opt: unix.IP_TOS, val: intval(0x48), v4: true},
	{name: "IP_TOS lowdelay byte", level: unix.SOL_IP, opt: unix.IP_TOS, val: []byte{0x10}, v4: true},
	{name: "IP_OPTIONS clear", level: unix.SOL_IP, opt: unix.IP_OPTIONS, val: nil, v4: true},
	{name: "IPV6_TCLASS AF21", level: unix.SOL_IPV6, opt: unix.IPV6_TCLASS, val: intval(0x48), v6: true},
	{name: "IPV6_TCLASS default", level: unix.SOL_IPV6, opt: unix.IPV6_TCLASS, val: intval(-1), v6: true},
}

// slimdMayDoAll runs, in the child (slimd's cgroup), everything the guard
// refuses to others, on sockets the child created.
func slimdMayDoAll(remote netip.AddrPort) error {
	v6 := is6(remote)
	for _, o := range dangerousOpts {
		if !(v6 && o.v6 || !v6 && o.v4) {
			continue
		}
		fd, err := tcpSocket(v6)
		if err != nil {
			return err
		}
		err = o.set(fd)
		unix.Close(fd)
		if err != nil && (!o.kernelMayNo || errors.Is(err, unix.EPERM)) {
			return fmt.Errorf("setsockopt %s: %w", o.name, err)
		}
	}
	any := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if v6 {
		any = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	}
	fd, err := tcpSocket(v6)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, sockaddr(any, v6)); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := unix.Connect(fd, sockaddr(remote, v6)); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if err := disconnect(fd); err != nil {
		return fmt.Errorf("connect AF_UNSPEC: %w", err)
	}
	if err := unix.Connect(fd, sockaddr(remote, v6)); err != nil {
		return fmt.Errorf("connect after AF_UNSPEC: %w", err)
	}
	tfo, err := tcpSocket(v6)
	if err != nil {
		return err
	}
	defer unix.Close(tfo)
	if err := fastOpen(tfo, remote); err != nil {
		return fmt.Errorf("sendto MSG_FASTOPEN: %w", err)
	}
	return nil
}

func getsockname(t testing.TB, fd int) netip.AddrPort {
	t.Helper()
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return fromSockaddr(sa)
}

func getpeername(t testing.TB, fd int) netip.AddrPort {
	t.Helper()
	sa, err := unix.Getpeername(fd)
	if err != nil {
		t.Fatalf("getpeername: %v", err)
	}
	return fromSockaddr(sa)
}

// accept4 accepts one connection on ln and returns the socket and the
// address accept4 returned.
func accept4(t testing.TB, ln int) (int, netip.AddrPort) {
	t.Helper()
	fd, sa, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatalf("accept4: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, fromSockaddr(sa)
}

func addrport(a string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(a), port)
}
