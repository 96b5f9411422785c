package seccomp

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/slimnet/slim/internal/testchild"
	"github.com/slimnet/slim/internal/testenv"
	"golang.org/x/sys/unix"
)

// The kernel tests re-exec the test binary as a child that installs the
// filter on itself, hands the fd to the parent's agent socket and then does
// the system calls its role asks for, reporting on stdout, one line each.
const (
	envRole     = "SLIM_SECCOMP_TEST_CHILD"
	envAgent    = "SLIM_SECCOMP_TEST_AGENT"
	envAddr     = "SLIM_SECCOMP_TEST_ADDR"
	envAll      = "SLIM_SECCOMP_TEST_ALL_THREADS"
	envNoKill   = "SLIM_SECCOMP_TEST_NO_KILLABLE"
	manyConnect = 200
)

// waitTimeout bounds every wait for the child or the kernel; generous for
// -race on a shared 2-vCPU machine.
const waitTimeout = 20 * time.Second

func TestMain(m *testing.M) {
	if role := os.Getenv(envRole); role != "" {
		os.Exit(childMain(role))
	}
	os.Exit(m.Run())
}

func report(format string, args ...any) {
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

func childMain(role string) int {
	// The filter goes on this thread only (unless envAll), and the role's
	// calls are made from it.
	runtime.LockOSThread()
	addr, _ := netip.ParseAddrPort(os.Getenv(envAddr))
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGUSR1)
	var gotSig atomic.Bool
	go func() {
		for range sigs {
			gotSig.Store(true)
			report("sig")
		}
	}()

	// Connect first: after Install our own connect would trap.
	ac, err := DialAgent(os.Getenv(envAgent))
	if err != nil {
		report("error %v", err)
		return 2
	}
	cfg := InstallConfig{AllThreads: os.Getenv(envAll) != "", NoKillableRecv: os.Getenv(envNoKill) != ""}
	fd, killable, err := InstallWith(cfg)
	if err != nil {
		report("error %v", err)
		return 2
	}
	st := specs.ContainerProcessState{
		Version: specs.Version,
		Pid:     os.Getpid(),
		State:   specs.State{Version: specs.Version, ID: "test-" + role, Status: specs.StateRunning, Pid: os.Getpid()},
	}
	if err := ac.Send(st, fd); err != nil {
		report("error %v", err)
		return 2
	}
	unix.Close(fd) // never keep our own notification fd
	report("installed killable=%v tid=%d", killable, unix.Gettid())

	switch role {
	case "connect":
		for _, c := range []struct {
			label   string
			cloexec bool
		}{{"continue", true}, {"refused", false}, {"swap", false}, {"addfd", false}} {
			flags := unix.SOCK_STREAM
			if c.cloexec {
				flags |= unix.SOCK_CLOEXEC
			}
			s, _ := unix.Socket(unix.AF_INET, flags, 0)
			report("socket label=%s fd=%d", c.label, s)
			r, e := rawConnect(s, addr)
			report("connect label=%s ret=%d errno=%s", c.label, r, errnoName(e))
			if e == 0 {
				_, err := unix.Write(s, []byte(c.label))
				report("wrote label=%s err=%v", c.label, err)
			}
		}
	case "send":
		s1, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		sa := sockaddr(addr)
		r, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s1), uintptr(unsafe.Pointer(&[]byte("tfo")[0])), 3,
			unix.MSG_FASTOPEN, uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
		report("sendto-fastopen ret=%d errno=%s", int(r), errnoName(e))
		// None of these may trap: if one did, we would block here and the
		// parent would never see plain-done.
		_, err1 := unix.Write(s1, []byte("w"))
		err2 := unix.Send(s1, []byte("s"), 0)
		_, _, e3 := unix.Syscall6(unix.SYS_SENDTO, uintptr(s1), uintptr(unsafe.Pointer(&[]byte("h")[0])), 1,
			unix.MSG_FASTOPEN<<32, 0, 0) // the flags are an int: the kernel sees 0
		_, err4 := unix.SendmsgN(s1, []byte("m"), nil, nil, unix.MSG_NOSIGNAL)
		report("plain-done errs=%v,%v,%s,%v", err1, err2, errnoName(e3), err4)

		s2, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		_, err := unix.SendmsgN(s2, []byte("tfo"), nil, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}, unix.MSG_FASTOPEN)
		report("sendmsg-fastopen err=%s", errName(err))

		s3, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		buf := []byte("mm")
		iov := unix.Iovec{Base: &buf[0]}
		iov.SetLen(len(buf))
		var mm unix.Mmsghdr
		mm.Hdr.Name = (*byte)(unsafe.Pointer(&sa))
		mm.Hdr.Namelen = uint32(unsafe.Sizeof(sa))
		mm.Hdr.Iov = &iov
		mm.Hdr.SetIovlen(1)
		r, _, e = unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s3), uintptr(unsafe.Pointer(&mm)), 1, unix.MSG_FASTOPEN, 0, 0)
		report("sendmmsg-fastopen ret=%d errno=%s", int(r), errnoName(e))
	case "bindlisten":
		s, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		report("socket fd=%d", s)
		err := unix.Bind(s, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
		report("bind err=%s", errName(err))
		err = unix.Listen(s, 7)
		report("listen err=%s", errName(err))
		var params [120]byte // struct io_uring_params
		_, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0)
		report("io_uring_setup errno=%s", errnoName(e))
		if runtime.GOARCH == "amd64" {
			_, _, e = unix.Syscall(x32SyscallBit|unix.SYS_GETPID, 0, 0, 0)
			report("x32 errno=%s", errnoName(e))
		} else {
			report("x32 errno=ENOSYS") // no x32 ABI here
		}
		report("done")
	case "block":
		s, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		report("socket fd=%d", s)
		r, e := rawConnect(s, addr)
		report("connect ret=%d errno=%s", r, errnoName(e))
		// Let a pending signal be reported before exiting.
		deadline := time.Now().Add(waitTimeout)
		for !gotSig.Load() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	case "idle":
		// Wait for commands on stdin; EOF ends the child.
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if sc.Text() == "connect" {
				s, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				r, e := rawConnect(s, addr)
				report("connect ret=%d errno=%s", r, errnoName(e))
				unix.Close(s)
			}
		}
	case "many":
		var wg sync.WaitGroup
		var ok, fail atomic.Int32
		for range manyConnect {
			wg.Go(func() {
				s, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				defer unix.Close(s)
				if _, e := rawConnect(s, addr); e == 0 {
					ok.Add(1)
				} else {
					fail.Add(1)
				}
			})
		}
		wg.Wait()
		tasks, _ := os.ReadDir("/proc/self/task")
		report("many ok=%d fail=%d threads=%d", ok.Load(), fail.Load(), len(tasks))
	case "exit":
	default:
		report("error unknown role %q", role)
		return 2
	}
	report("exit")
	return 0
}

func sockaddr(ap netip.AddrPort) unix.RawSockaddrInet4 {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
	return sa
}

// rawConnect calls connect(2) directly, to see its exact return value.
func rawConnect(fd int, ap netip.AddrPort) (int, unix.Errno) {
	sa := sockaddr(ap)
	r, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	return int(r), e
}

func errnoName(e unix.Errno) string {
	if e == 0 {
		return "0"
	}
	return unix.ErrnoName(e)
}

func errName(err error) string {
	var e unix.Errno
	if err == nil {
		return "0"
	}
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return err.Error()
}

// child is one re-exec'd child under the filter, and the parent's side.
type child struct {
	*testchild.Child
	t        testing.TB
	l        *Listener
	ln       *net.TCPListener
	addr     netip.AddrPort
	tid      int
	killable bool
}

// startChild runs a child in role, serving it a loopback listener and the
// agent socket, and returns once the parent holds its notification fd.
func startChild(t testing.TB, role string, env ...string) *child {
	t.Helper()
	testenv.RequireRoot(t)
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c := &child{t: t, ln: ln, addr: ln.Addr().(*net.TCPAddr).AddrPort()}

	path := t.TempDir() + "/agent.sock"
	type msg struct {
		st  specs.ContainerProcessState
		fds map[string]int
	}
	got := make(chan msg, 1)
	a, err := NewAgent(AgentConfig{Path: path, Log: testenv.Logger(t), Handle: func(st specs.ContainerProcessState, fds map[string]int) {
		got <- msg{st, fds}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("agent: %v", err)
		}
	})

	c.Child = testchild.Start(t, waitTimeout, append([]string{envRole + "=" + role, envAgent + "=" + path, envAddr + "=" + c.addr.String()}, env...))

	select {
	case m := <-got:
		if m.st.State.ID != "test-"+role || m.st.Pid != c.Cmd.Process.Pid {
			t.Errorf("agent got state %+v, want id test-%s pid %d", m.st, role, c.Cmd.Process.Pid)
		}
		c.l = NewListener(m.fds[specs.SeccompFdName])
		t.Cleanup(func() { c.l.Close() })
	case <-time.After(waitTimeout):
		t.Fatalf("no notification fd from the child; stderr:\n%s", c.Stderr.String())
	}
	line := c.Expect("installed")
	c.killable = testchild.Field(line, "killable") == "true"
	c.tid, _ = strconv.Atoi(testchild.Field(line, "tid"))
	return c
}

// receive waits for the next notification.
func (c *child) receive() Notif {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	n, err := c.l.Receive(ctx)
	if err != nil {
		c.t.Fatalf("receive: %v", err)
	}
	return n
}

// pending reports whether a notification waits to be received.
func (c *child) pending() bool {
	fds := []unix.PollFd{{Fd: int32(c.l.Fd()), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
}

// parseSockaddr4 decodes a struct sockaddr_in read from the target.
func parseSockaddr4(b []byte) (netip.AddrPort, error) {
	if len(b) < 8 || binary.LittleEndian.Uint16(b) != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("not a sockaddr_in: %x", b)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:])), nil
}

// countFDs counts our open fds.
func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
