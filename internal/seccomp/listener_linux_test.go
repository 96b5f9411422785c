package seccomp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/slimnet/slim/internal/poll"
	"github.com/slimnet/slim/internal/testchild"
	"golang.org/x/sys/unix"
)

// acceptRead accepts one connection on the child's listener and reads want
// from it.
func (c *child) acceptRead(want string) {
	c.t.Helper()
	c.ln.SetDeadline(time.Now().Add(waitTimeout))
	conn, err := c.ln.Accept()
	if err != nil {
		c.t.Fatalf("accept: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != want {
		c.t.Fatalf("read %q, %v; want %q", buf, err, want)
	}
}

// checkConnect checks a connect notification against what the child
// reported and what the target's memory and fd table say.
func (c *child) checkConnect(n Notif, fd int, cloexec bool) {
	c.t.Helper()
	if n.Syscall() != SysConnect || int(n.PID) != c.tid || n.Arch != NativeArch() || int(n.Args[0]) != fd {
		c.t.Fatalf("notification %+v: want connect by thread %d on fd %d", n, c.tid, fd)
	}
	b, err := c.l.ReadMem(n, n.Args[1], int(n.Args[2]))
	if err != nil {
		c.t.Fatalf("read sockaddr: %v", err)
	}
	if ap, err := parseSockaddr4(b); err != nil || ap != c.addr {
		c.t.Fatalf("sockaddr %v, %v; want %v", ap, err, c.addr)
	}
	pidfd, err := PidFD(int(n.PID))
	if err != nil {
		c.t.Fatal(err)
	}
	defer unix.Close(pidfd)
	if err := c.l.IDValid(n.ID); err != nil {
		c.t.Fatal(err)
	}
	sock, err := GetFD(pidfd, fd)
	if err != nil {
		c.t.Fatal(err)
	}
	defer unix.Close(sock)
	if typ, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
		c.t.Fatalf("target fd %d: type %d, %v", fd, typ, err)
	}
	if got, err := CloexecOf(int(n.PID), fd); err != nil || got != cloexec {
		c.t.Fatalf("CloexecOf(%d, %d) = %v, %v; want %v", n.PID, fd, got, err, cloexec)
	}
}

func TestConnect(t *testing.T) {
	c := startChild(t, "connect")
	if !c.killable {
		t.Error("WAIT_KILLABLE_RECV not in effect on this kernel")
	}

	// Continue: the kernel runs the original connect.
	fd, _ := strconv.Atoi(testchild.Field(c.Expect("socket label=continue"), "fd"))
	n := c.receive()
	c.checkConnect(n, fd, true)
	if _, err := ReadMem(int(n.PID), 8, 16); err == nil {
		t.Error("ReadMem at address 8 succeeded")
	}
	if _, err := ReadMem(int(n.PID), n.Args[1], MaxReadMem+1); err == nil {
		t.Error("ReadMem beyond MaxReadMem succeeded")
	}
	if err := c.l.Continue(n.ID); err != nil {
		t.Fatal(err)
	}
	if l := c.Expect("connect label=continue"); testchild.Field(l, "ret") != "0" {
		t.Fatalf("child: %s", l)
	}
	c.acceptRead("continue")
	if err := c.l.Continue(n.ID); !errors.Is(err, ErrGone) || !errors.Is(err, unix.ENOENT) {
		t.Errorf("second answer: %v, want ErrGone and ENOENT", err)
	}

	// Return an error.
	fd, _ = strconv.Atoi(testchild.Field(c.Expect("socket label=refused"), "fd"))
	n = c.receive()
	c.checkConnect(n, fd, false)
	if err := c.l.Return(n.ID, 0, unix.ECONNREFUSED); err != nil {
		t.Fatal(err)
	}
	if l := c.Expect("connect label=refused"); testchild.Field(l, "errno") != "ECONNREFUSED" {
		t.Fatalf("child: %s", l)
	}

	// Swap: install our own connected socket over the child's fd and answer
	// in the same ioctl. The child's bytes arrive on our socket's peer.
	fd, _ = strconv.Atoi(testchild.Field(c.Expect("socket label=swap"), "fd"))
	n = c.receive()
	c.checkConnect(n, fd, false)
	ours, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ours)
	if err := unix.Connect(ours, &unix.SockaddrInet4{Port: int(c.addr.Port()), Addr: c.addr.Addr().As4()}); err != nil {
		t.Fatal(err)
	}
	ourLocal, _ := unix.Getsockname(ours)
	got, err := c.l.AddFD(n.ID, ours, fd, true, true, false)
	if err != nil || got != fd {
		t.Fatalf("AddFD = %d, %v; want %d", got, err, fd)
	}
	l := c.Expect("connect label=swap")
	// SEND answers with the fd number: connect returns it instead of 0.
	if testchild.Field(l, "ret") != strconv.Itoa(fd) || testchild.Field(l, "errno") != "0" {
		t.Fatalf("child: %s", l)
	}
	t.Logf("connect answered by ADDFD_FLAG_SEND returned %s (the fd number), not 0", testchild.Field(l, "ret"))
	c.ln.SetDeadline(time.Now().Add(waitTimeout))
	conn, err := c.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if want := ourLocal.(*unix.SockaddrInet4).Port; conn.RemoteAddr().(*net.TCPAddr).Port != want {
		t.Fatalf("accepted %v, want our socket's port %d", conn.RemoteAddr(), want)
	}
	conn.SetDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "swap" {
		t.Fatalf("read %q, %v from the swapped socket", buf, err)
	}
	c.Expect("wrote label=swap")

	// ADDFD without SEND, with O_CLOEXEC, then answer 0 separately.
	fd, _ = strconv.Atoi(testchild.Field(c.Expect("socket label=addfd"), "fd"))
	n = c.receive()
	c.checkConnect(n, fd, false)
	ours2, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ours2)
	if err := unix.Connect(ours2, &unix.SockaddrInet4{Port: int(c.addr.Port()), Addr: c.addr.Addr().As4()}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.l.AddFD(n.ID, ours2, fd, true, false, true); err != nil || got != fd {
		t.Fatalf("AddFD = %d, %v; want %d", got, err, fd)
	}
	if ce, err := CloexecOf(int(n.PID), fd); err != nil || !ce {
		t.Fatalf("after AddFD with cloexec: CloexecOf = %v, %v", ce, err)
	}
	if err := c.l.Return(n.ID, 0, 0); err != nil {
		t.Fatal(err)
	}
	if l := c.Expect("connect label=addfd"); testchild.Field(l, "ret") != "0" {
		t.Fatalf("child: %s", l)
	}
	c.acceptRead("addfd")
	c.Expect("exit")
}

func TestSendFastOpen(t *testing.T) {
	c := startChild(t, "send")
	n := c.receive()
	if n.Syscall() != SysSendto || n.Args[3]&unix.MSG_FASTOPEN == 0 {
		t.Fatalf("notification %+v: want sendto with MSG_FASTOPEN", n)
	}
	b, err := c.l.ReadMem(n, n.Args[4], int(n.Args[5]))
	if err != nil {
		t.Fatal(err)
	}
	if ap, err := parseSockaddr4(b); err != nil || ap != c.addr {
		t.Fatalf("destination %v, %v; want %v", ap, err, c.addr)
	}
	if err := c.l.Continue(n.ID); err != nil {
		t.Fatal(err)
	}
	if l := c.Expect("sendto-fastopen"); testchild.Field(l, "ret") != "3" {
		t.Fatalf("child: %s", l)
	}
	// write, send, sendto with MSG_FASTOPEN only in the high register
	// bits, sendmsg: none trapped (the child would block otherwise).
	l := c.Expect("plain-done")
	if testchild.Field(l, "errs") != "<nil>,<nil>,0,<nil>" {
		t.Fatalf("child: %s", l)
	}

	n = c.receive()
	if n.Syscall() != SysSendmsg || n.Args[2]&unix.MSG_FASTOPEN == 0 {
		t.Fatalf("notification %+v: want sendmsg with MSG_FASTOPEN", n)
	}
	hdr, err := c.l.ReadMem(n, n.Args[1], int(unsafeSizeofMsghdr))
	if err != nil {
		t.Fatal(err)
	}
	name, namelen := leUint64(hdr[0:]), leUint32(hdr[8:])
	b, err = c.l.ReadMem(n, name, int(namelen))
	if err != nil {
		t.Fatal(err)
	}
	if ap, err := parseSockaddr4(b); err != nil || ap != c.addr {
		t.Fatalf("msg_name %v, %v; want %v", ap, err, c.addr)
	}
	if err := c.l.Return(n.ID, 0, unix.EOPNOTSUPP); err != nil {
		t.Fatal(err)
	}
	if l := c.Expect("sendmsg-fastopen"); testchild.Field(l, "err") != unix.ErrnoName(unix.EOPNOTSUPP) {
		t.Fatalf("child: %s", l)
	}

	n = c.receive()
	if n.Syscall() != SysSendmmsg || n.Args[3]&unix.MSG_FASTOPEN == 0 {
		t.Fatalf("notification %+v: want sendmmsg with MSG_FASTOPEN", n)
	}
	if err := c.l.Return(n.ID, 1, 0); err != nil {
		t.Fatal(err)
	}
	if l := c.Expect("sendmmsg-fastopen"); testchild.Field(l, "ret") != "1" {
		t.Fatalf("child: %s", l)
	}
	c.Expect("exit")
}

func TestBindListenIoUring(t *testing.T) {
	c := startChild(t, "bindlisten")
	fd, _ := strconv.Atoi(testchild.Field(c.Expect("socket"), "fd"))
	n := c.receive()
	if n.Syscall() != SysBind || int(n.Args[0]) != fd {
		t.Fatalf("notification %+v: want bind on fd %d", n, fd)
	}
	b, err := c.l.ReadMem(n, n.Args[1], int(n.Args[2]))
	if err != nil {
		t.Fatal(err)
	}
	if ap, err := parseSockaddr4(b); err != nil || ap.String() != "127.0.0.1:0" {
		t.Fatalf("bind address %v, %v", ap, err)
	}
	if err := c.l.Continue(n.ID); err != nil {
		t.Fatal(err)
	}
	if l := c.Expect("bind"); testchild.Field(l, "err") != "0" {
		t.Fatalf("child: %s", l)
	}
	n = c.receive()
	if n.Syscall() != SysListen || int(n.Args[0]) != fd || n.Args[1] != 7 {
		t.Fatalf("notification %+v: want listen(%d, 7)", n, fd)
	}
	if err := c.l.Continue(n.ID); err != nil {
		t.Fatal(err)
	}
	if l := c.Expect("listen"); testchild.Field(l, "err") != "0" {
		t.Fatalf("child: %s", l)
	}
	if l := c.Expect("io_uring_setup"); testchild.Field(l, "errno") != "EPERM" {
		t.Fatalf("child: %s", l)
	}
	if l := c.Expect("x32"); testchild.Field(l, "errno") != "ENOSYS" {
		t.Fatalf("child: %s", l)
	}
	c.Expect("done")
	if c.pending() {
		t.Error("a notification is pending after io_uring_setup and x32")
	}
	c.Expect("exit")
}

func TestKilledWhilePending(t *testing.T) {
	c := startChild(t, "block")
	c.Expect("socket")
	n := c.receive()
	pidfd, err := PidFD(int(n.PID))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	if err := c.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if err := c.l.IDValid(n.ID); !errors.Is(err, ErrGone) {
		t.Errorf("IDValid after kill: %v, want ErrGone", err)
	}
	if err := c.l.Return(n.ID, 0, unix.EPERM); !errors.Is(err, ErrGone) {
		t.Errorf("Return after kill: %v, want ErrGone", err)
	}
	if _, err := c.l.AddFD(n.ID, 0, 0, false, false, false); !errors.Is(err, ErrGone) {
		t.Errorf("AddFD after kill: %v, want ErrGone", err)
	}
	if _, err := ReadMem(int(n.PID), n.Args[1], 16); !errors.Is(err, ErrGone) {
		t.Errorf("ReadMem after kill: %v, want ErrGone", err)
	}
	if _, err := CloexecOf(int(n.PID), int(n.Args[0])); !errors.Is(err, ErrGone) {
		t.Errorf("CloexecOf after kill: %v, want ErrGone", err)
	}
	if _, err := PidFD(int(n.PID)); !errors.Is(err, ErrGone) {
		t.Errorf("PidFD after kill: %v, want ErrGone", err)
	}
	if fd, err := GetFD(pidfd, int(n.Args[0])); !errors.Is(err, ErrGone) {
		t.Errorf("GetFD after kill: %d, %v, want ErrGone", fd, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.l.Receive(ctx); !errors.Is(err, ErrNoTargets) {
		t.Errorf("Receive after kill: %v, want ErrNoTargets", err)
	}
}

func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return err.Error()
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return s
}

func TestExitNoTargets(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
	}{{"thread", nil}, {"all threads", []string{envAll + "=1"}}} {
		t.Run(tc.name, func(t *testing.T) {
			c := startChild(t, "exit", tc.env...)
			c.Expect("exit")
			// Exited, not reaped yet.
			poll.Until(t, waitTimeout, func() error {
				if s := procState(c.Cmd.Process.Pid); s != "Z" {
					return fmt.Errorf("child state %q, want Z", s)
				}
				return nil
			})
			// Measured on 6.18: the hang-up comes when the last task exits,
			// before the zombie is reaped (this fails if a kernel waits for
			// the reap: then an unreaped zombie would keep the broker's
			// Receive waiting).
			fds := []unix.PollFd{{Fd: int32(c.l.Fd()), Events: unix.POLLIN}}
			for {
				_, err := unix.Poll(fds, int(waitTimeout/time.Millisecond))
				if !errors.Is(err, unix.EINTR) {
					break
				}
			}
			if fds[0].Revents&unix.POLLHUP == 0 {
				t.Errorf("no POLLHUP while the child is an unreaped zombie (revents %#x)", fds[0].Revents)
			}
			if s := procState(c.Cmd.Process.Pid); s != "Z" {
				t.Errorf("child state %q, want Z", s)
			}
			c.Wait()
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			start := time.Now()
			if _, err := c.l.Receive(ctx); !errors.Is(err, ErrNoTargets) {
				t.Fatalf("Receive after exit: %v, want ErrNoTargets", err)
			}
			t.Logf("ErrNoTargets after %v", time.Since(start))
		})
	}
}

// sigPending reports whether signal sig is pending for thread tid.
func sigPending(pid, tid int, sig unix.Signal) (bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigPnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, err
			}
			return mask&(1<<(uint(sig)-1)) != 0, nil
		}
	}
	return false, fmt.Errorf("no SigPnd in status of %d/%d", pid, tid)
}

// With WAIT_KILLABLE_RECV, a received notification survives a non-fatal
// signal: the signal stays pending until the call is answered.
func TestSignalAfterReceiveKillable(t *testing.T) {
	c := startChild(t, "block")
	if !c.killable {
		t.Fatal("WAIT_KILLABLE_RECV not in effect")
	}
	c.Expect("socket")
	n := c.receive()
	pid := c.Cmd.Process.Pid
	if err := unix.Tgkill(pid, c.tid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, waitTimeout, func() error {
		if p, err := sigPending(pid, c.tid, unix.SIGUSR1); err != nil || !p {
			return fmt.Errorf("SIGUSR1 not pending on the trapped thread (%v)", err)
		}
		return nil
	})
	if err := c.l.IDValid(n.ID); err != nil {
		t.Fatalf("notification withdrawn by a signal despite WAIT_KILLABLE_RECV: %v", err)
	}
	if c.pending() {
		t.Fatal("the call was restarted")
	}
	if err := c.l.Continue(n.ID); err != nil {
		t.Fatal(err)
	}
	// The signal is delivered as soon as the call leaves the notification
	// wait. The continued connect may then still be waiting for the
	// handshake: it sees the signal, returns ERESTARTSYS, the handler runs,
	// and the restarted connect traps again (new id, same fd). A call
	// answered with a value (Return, ADDFD with SEND) is not restarted.
	restarts := 0
	var l string
	poll.Until(t, waitTimeout, func() error {
		if got, ok := c.TryExpect("connect"); ok {
			l = got
			return nil
		}
		if c.pending() {
			r := c.receive()
			if r.Syscall() != SysConnect || r.Args[0] != n.Args[0] || r.ID == n.ID {
				t.Fatalf("restarted call %+v, first %+v", r, n)
			}
			restarts++
			if err := c.l.Continue(r.ID); err != nil {
				t.Fatal(err)
			}
		}
		return errors.New("connect did not return")
	})
	if testchild.Field(l, "ret") != "0" {
		t.Fatalf("child: %s", l)
	}
	t.Logf("restarts of the continued connect after the held signal: %d", restarts)
	c.Expect("sig")
	c.Expect("exit")
}

// Without WAIT_KILLABLE_RECV, the same signal withdraws the notification the
// broker is handling, and the restarted call arrives again with a new id.
func TestSignalAfterReceiveNotKillable(t *testing.T) {
	c := startChild(t, "block", envNoKill+"=1")
	if c.killable {
		t.Fatal("WAIT_KILLABLE_RECV in effect though not asked for")
	}
	c.Expect("socket")
	n := c.receive()
	if err := unix.Tgkill(c.Cmd.Process.Pid, c.tid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, waitTimeout, func() error {
		if err := c.l.IDValid(n.ID); !errors.Is(err, ErrGone) {
			return fmt.Errorf("IDValid = %v, want ErrGone", err)
		}
		return nil
	})
	c.Expect("sig") // the handler ran while the call was trapped
	n2 := c.receive()
	if n2.ID == n.ID || n2.Syscall() != SysConnect || n2.Args[0] != n.Args[0] || n2.PID != n.PID {
		t.Fatalf("restarted call %+v, first %+v", n2, n)
	}
	if err := c.l.Continue(n.ID); !errors.Is(err, ErrGone) {
		t.Errorf("answer to the withdrawn call: %v, want ErrGone", err)
	}
	if err := c.l.Continue(n2.ID); err != nil {
		t.Fatal(err)
	}
	if l := c.Expect("connect"); testchild.Field(l, "ret") != "0" {
		t.Fatalf("child: %s", l)
	}
	c.Expect("exit")
}

// Even with WAIT_KILLABLE_RECV, a notification nobody has received yet is
// interruptible: the handler runs and the call is restarted.
func TestSignalBeforeReceive(t *testing.T) {
	c := startChild(t, "block")
	c.Expect("socket")
	poll.Until(t, waitTimeout, func() error {
		if !c.pending() {
			return errors.New("no notification pending")
		}
		return nil
	})
	if err := unix.Tgkill(c.Cmd.Process.Pid, c.tid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	c.Expect("sig") // delivered while the call was still trapped
	n := c.receive()
	if n.Syscall() != SysConnect {
		t.Fatalf("notification %+v", n)
	}
	if err := c.l.Continue(n.ID); err != nil {
		t.Fatal(err)
	}
	if l := c.Expect("connect"); testchild.Field(l, "ret") != "0" {
		t.Fatalf("child: %s", l)
	}
	if c.pending() {
		t.Error("a notification is left over")
	}
	c.Expect("exit")
}

// Many threads connect at once; several goroutines receive at once.
func TestManyConcurrent(t *testing.T) {
	c := startChild(t, "many", envAll+"=1")
	var accepted atomic.Int32
	go func() {
		for {
			conn, err := c.ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Close()
		}
	}()
	// Hold the first notifications until this many are pending at once:
	// that many threads are blocked in connect concurrently.
	const barrier = 20
	var (
		mu       sync.Mutex
		held     []uint64
		released bool
		answered atomic.Int32
		tids     = map[uint32]bool{}
		errs     = make(chan error, 8)
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				n, err := c.l.Receive(ctx)
				if err != nil {
					// The child may be gone before we are cancelled.
					if ctx.Err() == nil && !errors.Is(err, ErrNoTargets) {
						errs <- err
					}
					return
				}
				if n.Syscall() != SysConnect {
					errs <- fmt.Errorf("notification %+v", n)
					return
				}
				mu.Lock()
				tids[n.PID] = true
				var batch []uint64
				if !released {
					held = append(held, n.ID)
					if len(held) < barrier {
						mu.Unlock()
						continue
					}
					released, batch = true, held
				} else {
					batch = []uint64{n.ID}
				}
				mu.Unlock()
				for _, id := range batch {
					if err := c.l.Continue(id); err != nil {
						errs <- err
						return
					}
					answered.Add(1)
				}
			}
		})
	}
	l := c.Expect("many")
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if testchild.Field(l, "ok") != strconv.Itoa(manyConnect) || testchild.Field(l, "fail") != "0" {
		t.Fatalf("child: %s", l)
	}
	if got := answered.Load(); got != manyConnect {
		t.Errorf("answered %d, want %d", got, manyConnect)
	}
	poll.Until(t, waitTimeout, func() error {
		if got := accepted.Load(); got != manyConnect {
			return fmt.Errorf("accepted %d of %d", got, manyConnect)
		}
		return nil
	})
	t.Logf("%s; %d distinct threads trapped", l, len(tids))
	c.Expect("exit")
}

func TestCloseAndCancel(t *testing.T) {
	c := startChild(t, "idle")

	// A cancelled receiver leaves; the other one keeps receiving.
	ctxA, cancelA := context.WithCancel(context.Background())
	resA := make(chan error, 1)
	go func() {
		_, err := c.l.Receive(ctxA)
		resA <- err
	}()
	resB := make(chan Notif, 1)
	errB := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		n, err := c.l.Receive(ctx)
		if err != nil {
			errB <- err
			return
		}
		resB <- n
	}()
	cancelA()
	select {
	case err := <-resA:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Receive: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("cancelled Receive did not return")
	}
	io.WriteString(c.Stdin, "connect\n")
	select {
	case n := <-resB:
		if err := c.l.Continue(n.ID); err != nil {
			t.Fatal(err)
		}
	case err := <-errB:
		t.Fatal(err)
	}
	if l := c.Expect("connect"); testchild.Field(l, "ret") != "0" {
		t.Fatalf("child: %s", l)
	}

	// Close wakes a blocked receiver; later operations fail cleanly.
	res := make(chan error, 1)
	go func() {
		_, err := c.l.Receive(context.Background())
		res <- err
	}()
	poll.Until(t, waitTimeout, func() error {
		c.l.rmu.Lock()
		defer c.l.rmu.Unlock()
		for r := range c.l.receivers {
			if r.inside.Load() {
				return nil
			}
		}
		return errors.New("receiver not waiting yet")
	})
	if err := c.l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Receive during Close: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Close did not wake Receive")
	}
	if err := c.l.IDValid(1); !errors.Is(err, ErrClosed) {
		t.Errorf("IDValid after Close: %v", err)
	}
	if _, err := c.l.AddFD(1, 0, 0, false, false, false); !errors.Is(err, ErrClosed) {
		t.Errorf("AddFD after Close: %v", err)
	}
	if _, err := c.l.Receive(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Receive after Close: %v", err)
	}

	// We held the only copy: the target's trapped calls now fail with ENOSYS.
	io.WriteString(c.Stdin, "connect\n")
	if l := c.Expect("connect"); testchild.Field(l, "errno") != "ENOSYS" {
		t.Fatalf("connect without a supervisor: %s", l)
	}
	c.Stdin.Close()
	c.Expect("exit")
}

func TestSyncWakeUp(t *testing.T) {
	c := startChild(t, "idle")
	if err := c.l.SetSyncWakeUp(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(c.Stdin, "connect\n")
	n := c.receive()
	if err := c.l.Continue(n.ID); err != nil {
		t.Fatal(err)
	}
	if l := c.Expect("connect"); testchild.Field(l, "ret") != "0" {
		t.Fatalf("child: %s", l)
	}
	c.Stdin.Close()
	c.Expect("exit")
}

var unsafeSizeofMsghdr = unsafe.Sizeof(unix.Msghdr{})

func leUint64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
func leUint32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
