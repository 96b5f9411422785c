package keeper

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"

	"github.com/slimnet/slim/internal/poll"
	"github.com/slimnet/slim/internal/seccomp"
	"github.com/slimnet/slim/internal/testchild"
	"golang.org/x/sys/unix"
)

// seccompMain is a container process under Slim's filter, installed the
// way the launcher does it, except that it hands its notification fd to
// the keeper (standing in for slimd's agent socket) and then keeps none.
// Each "connect" line on stdin makes it connect to envAddr.
func seccompMain() int {
	runtime.LockOSThread() // the filter and the connects on this thread
	addr, err := netip.ParseAddrPort(os.Getenv(envAddr))
	if err != nil {
		report("error %v", err)
		return 2
	}
	c, err := Dial(os.Getenv(envSocket)) // before the filter: connect traps after
	if err != nil {
		report("error %v", err)
		return 2
	}
	fd, killable, err := seccomp.Install()
	if err != nil {
		report("error %v", err)
		return 2
	}
	if err := c.Put("container-1", []byte("session=1"), fd); err != nil {
		report("error %v", err)
		return 2
	}
	unix.Close(fd)
	c.Close()
	report("installed killable=%v", killable)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() != "connect" {
			continue
		}
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			report("error %v", err)
			return 2
		}
		report("connecting")
		err = unix.Connect(s, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()})
		report("connect err=%v", err)
		unix.Close(s)
	}
	report("exit")
	return 0
}

// notifyFDs counts the seccomp notification fds process pid has open.
func notifyFDs(t *testing.T, pid int) int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if link, _ := os.Readlink(dir + "/" + e.Name()); link == "anon_inode:seccomp notify" {
			n++
		}
	}
	return n
}

// slimd is one incarnation of the supervisor: the fds from the keeper and
// the journal.
type slimd struct {
	t       *testing.T
	c       *Client
	l       *seccomp.Listener
	j       *Journal
	left    []Entry
	session uint64
}

// startSlimd is what slimd does on start: open the journal, fetch the fds.
func startSlimd(t *testing.T, socket, journal string) *slimd {
	t.Helper()
	s := &slimd{t: t, session: 1}
	var err error
	if s.j, s.left, err = OpenJournal(journal, 64); err != nil {
		t.Fatal(err)
	}
	if s.c, err = Dial(socket); err != nil {
		t.Fatal(err)
	}
	held, err := s.c.Fetch()
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 1 || held[0].Key != "container-1" || string(held[0].Meta) != "session=1" {
		closeHeld(held)
		t.Fatalf("fetched %q, want container-1 with its meta", keys(held))
	}
	s.l = seccomp.NewListener(held[0].Fd)
	t.Cleanup(s.die)
	return s
}

// die is a crash: fds closed by the kernel, journal left as it is.
func (s *slimd) die() {
	s.l.Close()
	s.j.Close()
	s.c.Close()
}

func (s *slimd) receive() seccomp.Notif {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	n, err := s.l.Receive(ctx)
	if err != nil {
		s.t.Fatalf("receive: %v", err)
	}
	if n.Syscall() != seccomp.SysConnect {
		s.t.Fatalf("trapped %v, want connect", n.Syscall())
	}
	return n
}

// pendingNotif waits until a notification waits to be received on fd.
func pendingNotif(t *testing.T, fd int) {
	t.Helper()
	poll.Until(t, waitTimeout, func() error {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 0); err != nil || n == 0 || fds[0].Revents&unix.POLLIN == 0 {
			return fmt.Errorf("no notification pending (poll %d, %v, revents %#x)", n, err, fds[0].Revents)
		}
		return nil
	})
}

// TestSeccompSupervisorRestart is the property slimd needs: with the keeper
// holding the notification fd, a dead slimd does not break the container.
// A trapped connect blocks (no ENOSYS) while no slimd runs; the next slimd
// receives what was queued and, through the journal, answers what its
// predecessor had received but not answered; and when the container ends
// the keeper lets go of the fd by itself.
func TestSeccompSupervisorRestart(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "keeper.sock")
	journal := filepath.Join(dir, "journal")
	_, k := startKeeper(t, socket)
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accept and drop, so connects complete
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	child := startProc(t, "seccomp", []string{envSocket + "=" + socket, envAddr + "=" + ln.Addr().String()})
	line := child.Expect("installed")
	t.Logf("child: %s", line)

	// 1. No slimd has ever run; only the keeper holds the fd. The connect
	// traps and waits (it would fail with ENOSYS if nobody held the fd).
	fmt.Fprintln(child.Stdin, "connect")
	child.Expect("connecting")

	// 2. slimd A starts, finds the queued notification, receives it,
	// journals it, and dies before answering.
	a := startSlimd(t, socket, journal)
	if len(a.left) != 0 {
		t.Fatalf("fresh journal has leftovers %v", a.left)
	}
	pendingNotif(t, a.l.Fd())
	if got := child.Pending(); slices.ContainsFunc(got, func(l string) bool { return l != "connecting" && l != "installed" }) {
		t.Fatalf("the trapped connect returned without an answer: %q", got)
	}
	n := a.receive()
	entry := Entry{Session: a.session, ID: n.ID, PID: n.PID, Nr: n.Nr, Arch: n.Arch, Args: n.Args}
	if _, ok := a.j.Record(entry); !ok {
		t.Fatal("journal full")
	}
	a.die()

	// 3. slimd B: the journal holds A's leftover, the keeper the fd; the
	// leftover is still pending (the child still waits, no ENOSYS), and
	// answering it by id lets the connect run.
	b := startSlimd(t, socket, journal)
	if len(b.left) != 1 || b.left[0] != entry {
		t.Fatalf("leftovers %+v, want [%+v]", b.left, entry)
	}
	for _, e := range b.left {
		if e.Session != b.session {
			t.Fatalf("leftover of session %d", e.Session)
		}
		if err := b.l.IDValid(e.ID); err != nil {
			t.Fatalf("leftover %d no longer pending: %v", e.ID, err)
		}
		if err := b.l.Continue(e.ID); err != nil {
			t.Fatalf("continue leftover: %v", err)
		}
	}
	b.j.ClearAll()
	if line := child.Expect("connect "); testchild.Field(line, "err") != "<nil>" {
		t.Fatalf("connect after the restart: %s", line)
	}

	// 4. B serves the next connect the ordinary way.
	fmt.Fprintln(child.Stdin, "connect")
	n = b.receive()
	slot, ok := b.j.Record(Entry{Session: b.session, ID: n.ID, PID: n.PID, Nr: n.Nr, Arch: n.Arch, Args: n.Args})
	if !ok {
		t.Fatal("journal full")
	}
	if err := b.l.Continue(n.ID); err != nil {
		t.Fatal(err)
	}
	b.j.Done(slot)
	if line := child.Expect("connect "); testchild.Field(line, "err") != "<nil>" {
		t.Fatalf("second connect: %s", line)
	}
	b.die()

	// 5. The container ends while no slimd runs: the keeper sees POLLHUP
	// on the notification fd and closes it by itself.
	if n := notifyFDs(t, k.pid); n != 1 {
		t.Fatalf("keeper holds %d notification fds, want 1", n)
	}
	child.Stdin.Close()
	child.Expect("exit")
	c := dial(t, socket)
	poll.Until(t, waitTimeout, func() error {
		held, err := c.Fetch()
		if err != nil {
			return err
		}
		closeHeld(held)
		if len(held) != 0 {
			return fmt.Errorf("keeper still holds %q after the container ended", keys(held))
		}
		return nil
	})
	if n := notifyFDs(t, k.pid); n != 0 {
		t.Errorf("keeper still has %d notification fds open", n)
	}
	j, left, err := OpenJournal(journal, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if len(left) != 0 {
		t.Errorf("leftovers after everything was answered: %+v", left)
	}
}
