package seccomp

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/slimnet/slim/internal/poll"
	"github.com/slimnet/slim/internal/testenv"
	"golang.org/x/sys/unix"
)

// orphanNotifyFD returns a real notification fd whose filter has no task
// left: it is installed on a throwaway thread that then exits (a goroutine
// that ends locked takes its thread with it). Needs no root: Install sets
// no_new_privs.
func orphanNotifyFD(t *testing.T) int {
	t.Helper()
	type res struct {
		fd  int
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		fd, _, err := Install()
		ch <- res{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.fd
}

type agentCall struct {
	st  specs.ContainerProcessState
	fds map[string]int
}

// startAgent serves an agent on a fresh path; handled calls go to the
// returned channel, whose receiver owns the fds.
func startAgent(t *testing.T, timeout time.Duration) (string, chan agentCall) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sock")
	calls := make(chan agentCall, 16)
	a, err := NewAgent(AgentConfig{Path: path, Log: testenv.Logger(t), Timeout: timeout,
		Handle: func(st specs.ContainerProcessState, fds map[string]int) { calls <- agentCall{st, fds} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("agent socket left behind: %v", err)
		}
	})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("agent socket mode %v, want socket 0600", fi.Mode())
	}
	return path, calls
}

// sendRaw sends data with fds in one sendmsg (or in two, split at split
// bytes, fds with the first) and returns what the agent answered: "ack",
// "closed", or an error text.
func sendRaw(t *testing.T, path string, data []byte, fds []int, split int) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	uc.SetDeadline(time.Now().Add(waitTimeout))
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	first, rest := data, []byte(nil)
	if split > 0 && split < len(data) {
		first, rest = data[:split], data[split:]
	}
	// A message the agent refuses half way may fail to write: that is fine.
	if _, _, err := uc.WriteMsgUnix(first, oob, nil); err == nil && len(rest) > 0 {
		uc.Write(rest)
	}
	var b [1]byte
	switch _, err := uc.Read(b[:]); {
	case err == nil && b[0] == agentAck:
		return "ack"
	case errors.Is(err, io.EOF), errors.Is(err, unix.ECONNRESET):
		return "closed"
	case err != nil:
		return err.Error()
	}
	return "answer " + strconv.Quote(string(b[:]))
}

func stateJSON(t *testing.T, names ...string) []byte {
	t.Helper()
	b, err := json.Marshal(specs.ContainerProcessState{
		Version: specs.Version, Fds: names, Pid: 42, Metadata: "m",
		State: specs.State{Version: specs.Version, ID: "c1", Status: specs.StateCreated, Pid: 42, Bundle: "/b"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func devNull(t *testing.T) int {
	t.Helper()
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestAgentAccepts(t *testing.T) {
	path, calls := startAgent(t, waitTimeout)
	before := countFDs(t)

	check := func(c agentCall, id string) {
		t.Helper()
		if c.st.State.ID != id || c.st.Pid != 42 || len(c.st.Fds) != 1 || c.st.Fds[0] != specs.SeccompFdName {
			t.Errorf("state %+v", c.st)
		}
		fd, ok := c.fds[specs.SeccompFdName]
		if !ok || len(c.fds) != 1 {
			t.Fatalf("fds %v", c.fds)
		}
		if err := checkNotifyFD(fd); err != nil {
			t.Error(err)
		}
		if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("received fd flags %#x, %v: want close-on-exec", fl, err)
		}
		unix.Close(fd)
	}

	// Slim's client.
	fd := orphanNotifyFD(t)
	st := specs.ContainerProcessState{Version: specs.Version, Pid: 42, State: specs.State{ID: "c1", Pid: 42}}
	if err := SendToAgent(path, st, fd); err != nil {
		t.Fatal(err)
	}
	check(<-calls, "c1")

	// runc's way, the message split across two segments of the stream, fd
	// with the first: read until the JSON is complete, without EOF.
	data := stateJSON(t, specs.SeccompFdName)
	if got := sendRaw(t, path, data, []int{fd}, 10); got != "ack" {
		t.Fatalf("split message: %s", got)
	}
	check(<-calls, "c1")
	unix.Close(fd)

	poll.Until(t, waitTimeout, func() error {
		if n := countFDs(t); n != before {
			return errors.New("fd count " + strconv.Itoa(n) + ", want " + strconv.Itoa(before))
		}
		return nil
	})
}

func TestAgentRejects(t *testing.T) {
	path, calls := startAgent(t, 300*time.Millisecond)
	notif := orphanNotifyFD(t)
	defer unix.Close(notif)
	null := devNull(t)
	defer unix.Close(null)
	before := countFDs(t)

	big := append([]byte(`{"ociVersion":"`), strings.Repeat("x", MaxAgentMessage)...)
	big = append(big, `"}`...)
	many := make([]int, MaxAgentFDs+2)
	for i := range many {
		many[i] = notif
	}
	names := make([]string, len(many))
	for i := range names {
		names[i] = "fd" + strconv.Itoa(i)
	}
	names[0] = specs.SeccompFdName

	for _, tc := range []struct {
		name  string
		data  []byte
		fds   []int
		split int
	}{
		{"malformed json", []byte(`{"ociVersion": "1.2", "fds": ["seccompFd"`), []int{notif}, 0},
		{"syntax error", []byte(`{"ociVersion": x`), []int{notif}, 0},
		{"wrong types", []byte(`{"ociVersion": 5, "fds": ["seccompFd"]}`), []int{notif}, 0},
		{"not an object", []byte(`[1, 2]`), []int{notif}, 0},
		{"missing fd", stateJSON(t, specs.SeccompFdName), nil, 0},
		{"fd not named", stateJSON(t), []int{notif}, 0},
		{"no seccompFd name", stateJSON(t, "other"), []int{notif}, 0},
		{"more fds than names", stateJSON(t, specs.SeccompFdName), []int{notif, notif}, 0},
		{"duplicate names", stateJSON(t, specs.SeccompFdName, specs.SeccompFdName), []int{notif, notif}, 0},
		{"not a notification fd", stateJSON(t, specs.SeccompFdName), []int{null}, 0},
		{"too many fds", stateJSON(t, names...), many, 0},
		{"too large", big, []int{notif}, 0},
		{"silent", nil, nil, 0},
		{"fd then silence", nil, []int{notif}, 0},
		{"half then silence", stateJSON(t, specs.SeccompFdName), []int{notif}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			if tc.split < 0 { // only the first half, then nothing
				data = data[:len(data)/2]
			}
			if len(data) == 0 && len(tc.fds) > 0 {
				data = []byte(" ") // SCM_RIGHTS needs a byte to ride on
			}
			if got := sendRaw(t, path, data, tc.fds, 0); got != "closed" {
				t.Errorf("agent answered %s, want a close", got)
			}
		})
	}
	select {
	case c := <-calls:
		t.Errorf("handler called for %+v", c.st)
		for _, fd := range c.fds {
			unix.Close(fd)
		}
	default:
	}
	poll.Until(t, waitTimeout, func() error {
		if n := countFDs(t); n != before {
			return errors.New("fd count " + strconv.Itoa(n) + ", want " + strconv.Itoa(before))
		}
		return nil
	})

	// Still serving.
	if err := SendToAgent(path, specs.ContainerProcessState{State: specs.State{ID: "after"}}, notif); err != nil {
		t.Fatal(err)
	}
	c := <-calls
	unix.Close(c.fds[specs.SeccompFdName])
}

func TestAgentSocketPath(t *testing.T) {
	dir := t.TempDir()
	noop := func(specs.ContainerProcessState, map[string]int) {}

	// A regular file is never replaced.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o644)
	if _, err := NewAgent(AgentConfig{Path: file, Handle: noop}); err == nil {
		t.Error("NewAgent replaced a regular file")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("regular file changed")
	}

	// A stale socket (nobody listening) is replaced.
	path := filepath.Join(dir, "agent.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	a, err := NewAgent(AgentConfig{Path: path, Handle: noop})
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	// A live one is not.
	if _, err := NewAgent(AgentConfig{Path: path, Handle: noop}); !errors.Is(err, ErrAgentInUse) {
		t.Errorf("second agent on a live socket: %v, want ErrAgentInUse", err)
	}
	a.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("leftovers in %s: %v", dir, ents)
	}
}

func TestSendToAgentRejected(t *testing.T) {
	path, calls := startAgent(t, waitTimeout)
	null := devNull(t)
	defer unix.Close(null)
	if err := SendToAgent(path, specs.ContainerProcessState{}, null); !errors.Is(err, ErrAgentRejected) {
		t.Errorf("sending /dev/null: %v, want ErrAgentRejected", err)
	}
	if len(calls) != 0 {
		t.Error("handler called")
	}
	if err := SendToAgent(filepath.Join(t.TempDir(), "none"), specs.ContainerProcessState{}, null); err == nil {
		t.Error("SendToAgent to a missing socket succeeded")
	}
}

func FuzzParseAgentMessage(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.2.0","fds":["seccompFd"],"pid":1,"state":{"ociVersion":"1.2.0","id":"x","status":"running","pid":1,"bundle":"/"}}`), 1)
	f.Add([]byte(`{"fds":["seccompFd","a","a"]}`), 3)
	f.Add([]byte(`{"fds":null}`), 0)
	f.Add([]byte(`nul`), 1)
	f.Fuzz(func(t *testing.T, data []byte, nfds int) {
		st, names, err := parseAgentMessage(data, nfds)
		if err != nil {
			return
		}
		if len(names) != nfds || len(st.Fds) != nfds {
			t.Fatalf("%d names for %d fds", len(names), nfds)
		}
		seen := map[int]bool{}
		for name, i := range names {
			if i < 0 || i >= nfds || seen[i] || st.Fds[i] != name {
				t.Fatalf("bad index %d for %q", i, name)
			}
			seen[i] = true
		}
		if _, ok := names[specs.SeccompFdName]; !ok {
			t.Fatal("accepted without seccompFd")
		}
	})
}
