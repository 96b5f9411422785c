package keeper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/poll"
	"github.com/slimnet/slim/internal/testchild"
	"golang.org/x/sys/unix"
)

// The tests re-exec the test binary in other roles: as a keeper process
// ("keeper --socket P --log F", the way slimd re-execs itself), and as
// children chosen by envRole that report on stdout, one line each.
const (
	envRole    = "SLIM_KEEPER_TEST_ROLE"
	envSocket  = "SLIM_KEEPER_TEST_SOCKET"
	envJournal = "SLIM_KEEPER_TEST_JOURNAL"
	envAddr    = "SLIM_KEEPER_TEST_ADDR"
	envKeys    = "SLIM_KEEPER_TEST_KEYS"
)

// waitTimeout bounds every wait for a child or the kernel; generous for
// -race on a shared 2-vCPU machine.
const waitTimeout = 20 * time.Second

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "keeper" {
		os.Exit(keeperMain(os.Args[2:]))
	}
	if role := os.Getenv(envRole); role != "" {
		os.Exit(childMain(role))
	}
	os.Exit(m.Run())
}

// keeperMain is what cmd/slimd's keeper subcommand does.
func keeperMain(args []string) int {
	var socket, logPath string
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "--socket":
			socket = args[i+1]
		case "--log":
			logPath = args[i+1]
		}
	}
	out := os.Stderr
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return 2
		}
		out = f
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := Serve(context.Background(), socket, log); err != nil {
		log.Error("keeper", "err", err)
		if errors.Is(err, ErrRunning) {
			return 3
		}
		return 1
	}
	return 0
}

func report(format string, args ...any) {
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

func childMain(role string) int {
	switch role {
	case "putter":
		return putterMain()
	case "journal":
		return journalMain()
	case "seccomp":
		return seccompMain()
	}
	report("error unknown role %q", role)
	return 2
}

// putterMain plays a slimd that hands fds 3.. (its ExtraFiles) to the
// keeper under the keys in envKeys and then waits to be killed.
func putterMain() int {
	c, err := Dial(os.Getenv(envSocket))
	if err != nil {
		report("error %v", err)
		return 2
	}
	for i, key := range strings.Split(os.Getenv(envKeys), ",") {
		if err := c.Put(key, []byte("meta-"+key), 3+i); err != nil {
			report("error %v", err)
			return 2
		}
	}
	report("put")
	select {} // until SIGKILL
}

// journalMain records entries 1..10, marks the even ones Done, and waits
// to be killed: the odd ones are its leftovers.
func journalMain() int {
	j, left, err := OpenJournal(os.Getenv(envJournal), 64)
	if err != nil {
		report("error %v", err)
		return 2
	}
	if len(left) != 0 {
		report("error leftovers %v", left)
		return 2
	}
	for id := uint64(1); id <= 10; id++ {
		slot, ok := j.Record(testEntry(id))
		if !ok {
			report("error journal full")
			return 2
		}
		if id%2 == 0 {
			j.Done(slot)
		}
	}
	report("recorded")
	select {} // until SIGKILL
}

func testEntry(id uint64) Entry {
	return Entry{Session: 7, ID: id, PID: uint32(1000 + id), Nr: 42, Arch: 0xc000003e,
		Args: [6]uint64{id, 0x7ffd0000 + id, 16, 0, 0, id << 40}}
}

// proc is a re-exec'd child in a role.
type proc struct{ *testchild.Child }

// startProc runs the test binary in role with env and extra files (fd 3..)
// and kills it (SIGKILL, only this pid) at cleanup.
func startProc(t *testing.T, role string, env []string, extra ...*os.File) *proc {
	t.Helper()
	return &proc{testchild.Start(t, waitTimeout, append([]string{envRole + "=" + role}, env...), extra...)}
}

// keeperProc is a keeper process started with Start, killed at cleanup
// through a pidfd, so only that process can be hit.
type keeperProc struct {
	pid     int
	pidfd   int
	logPath string
}

// startKeeper starts a keeper process for socket and returns a client.
func startKeeper(t *testing.T, socket string) (*Client, *keeperProc) {
	t.Helper()
	logPath := socket + ".log"
	c, err := Start(socket, []string{os.Args[0], "keeper", "--socket", socket, "--log", logPath})
	if err != nil {
		t.Fatalf("start keeper: %v\nlog:\n%s", err, readFile(logPath))
	}
	t.Cleanup(func() { c.Close() })
	k := &keeperProc{pid: c.PID(), logPath: logPath}
	if k.pid <= 0 {
		t.Fatal("no keeper pid")
	}
	k.pidfd, err = unix.PidfdOpen(k.pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", k.pid, err)
	}
	t.Cleanup(func() {
		k.kill(t)
		unix.Close(k.pidfd)
		log := readFile(logPath)
		if strings.Contains(log, "DATA RACE") {
			t.Errorf("keeper reported a data race:\n%s", log)
		} else if t.Failed() {
			t.Logf("keeper log:\n%s", log)
		}
	})
	return c, k
}

// alive reports whether the keeper has not exited.
func (k *keeperProc) alive() bool {
	fds := []unix.PollFd{{Fd: int32(k.pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n == 0
}

// kill sends SIGKILL through the pidfd and waits for the exit.
func (k *keeperProc) kill(t *testing.T) {
	if !k.alive() {
		return
	}
	if err := unix.PidfdSendSignal(k.pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		t.Errorf("kill keeper: %v", err)
	}
	poll.Until(t, waitTimeout, func() error {
		if k.alive() {
			return errors.New("keeper still alive")
		}
		return nil
	})
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// countFDs counts the open fds of pid ("self" for us).
func countFDs(t *testing.T, pid string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// pipe returns a pipe whose ends are closed at cleanup (closing an
// os.File twice is harmless, so tests may close them earlier).
func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		w.Close()
	})
	return r, w
}

func fdOf(f *os.File) int { return int(f.Fd()) }

// roundTrip writes msg into a pipe through w and reads it back from r:
// proof that w is a dup of that pipe's write end.
func roundTrip(t *testing.T, w int, r *os.File, msg string) {
	t.Helper()
	if _, err := unix.Write(w, []byte(msg)); err != nil {
		t.Fatalf("write through fd %d: %v", w, err)
	}
	buf := make([]byte, 64)
	r.SetReadDeadline(time.Now().Add(waitTimeout))
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != msg {
		t.Fatalf("read %q, %v from the pipe, want %q", buf[:n], err, msg)
	}
}

// expectEOF checks that every write end of r's pipe is closed.
func expectEOF(t *testing.T, r *os.File) {
	t.Helper()
	r.SetReadDeadline(time.Now().Add(waitTimeout))
	n, err := r.Read(make([]byte, 64))
	if !errors.Is(err, io.EOF) {
		t.Fatalf("read %d bytes, %v; want EOF (no writer left)", n, err)
	}
}

func keys(held []Held) string {
	var k []string
	for _, h := range held {
		k = append(k, h.Key)
	}
	return strings.Join(k, ",")
}

func closeHeld(held []Held) {
	for _, h := range held {
		unix.Close(h.Fd)
	}
}
