package keeper

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/poll"
	"golang.org/x/sys/unix"
)

// TestKeeperProcess runs the keeper as its own process, as slimd does: a
// "slimd" puts fds and is killed with SIGKILL, a new one gets them back,
// drops one, and the keeper shrugs off the signals that end slimd.
func TestKeeperProcess(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "keeper.sock")
	c1, k := startKeeper(t, socket)
	if sid, _ := unix.Getsid(k.pid); sid != k.pid {
		t.Errorf("keeper session %d, want its own (%d)", sid, k.pid)
	}
	if pgid, _ := unix.Getpgid(k.pid); pgid != k.pid {
		t.Errorf("keeper process group %d, want its own (%d)", pgid, k.pid)
	}
	// Counted while only c1 is connected: the keeper notices a closed
	// connection asynchronously, so counting right after c2.Close raced.
	base := countFDs(t, strconv.Itoa(k.pid))
	// Start finds the running keeper instead of starting another.
	c2, err := Start(socket, []string{"/bin/false"})
	if err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if c2.PID() != k.pid {
		t.Errorf("second Start reached pid %d, want %d", c2.PID(), k.pid)
	}
	c2.Close()

	// A slimd puts three pipes' write ends and dies with SIGKILL; we keep
	// only the read ends.
	names := []string{"a", "b", "c"}
	reads := map[string]*os.File{}
	var writes []*os.File
	for _, n := range names {
		r, w := pipe(t)
		reads[n] = r
		writes = append(writes, w)
	}
	putter := startProc(t, "putter", []string{envSocket + "=" + socket, envKeys + "=" + strings.Join(names, ",")}, writes...)
	putter.Expect("put")
	putter.Kill()
	for _, w := range writes {
		w.Close()
	}

	// The next slimd gets them back.
	c3 := dial(t, socket)
	held := fetch(t, c3)
	if got := keys(held); got != "a,b,c" {
		t.Fatalf("fetched %q, want a,b,c", got)
	}
	for _, h := range held {
		if string(h.Meta) != "meta-"+h.Key {
			t.Errorf("%s: meta %q", h.Key, h.Meta)
		}
		roundTrip(t, h.Fd, reads[h.Key], "after the crash "+h.Key)
	}
	closeHeld(held)
	if err := c3.Drop("b"); err != nil {
		t.Fatal(err)
	}
	expectEOF(t, reads["b"]) // the keeper's copy was the last writer
	if got := fetchKeys(t, c3); got != "a,c" {
		t.Fatalf("after drop: %q", got)
	}
	poll.Until(t, waitTimeout, func() error {
		// base + the two fds still held + c3's connection.
		if n := countFDs(t, strconv.Itoa(k.pid)); n != base+3 {
			return fmt.Errorf("keeper has %d fds, want %d (+2 held, +1 for c3)", n, base+3)
		}
		return nil
	})

	// Signals that end slimd (to it, to its process group, from a
	// terminal) leave the keeper alone.
	status := readFile(fmt.Sprintf("/proc/%d/status", k.pid))
	for l := range strings.Lines(status) {
		if rest, ok := strings.CutPrefix(l, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(rest), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP} {
				if mask&(1<<(sig-1)) == 0 {
					t.Errorf("keeper does not ignore %v (SigIgn %#x)", sig, mask)
				}
			}
		}
	}
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGHUP, unix.SIGINT} {
		if err := unix.Kill(k.pid, sig); err != nil {
			t.Fatal(err)
		}
		if err := unix.Kill(-k.pid, sig); err != nil { // its process group
			t.Fatal(err)
		}
	}
	if err := c1.Ping(); err != nil {
		t.Fatalf("ping after the signals: %v", err)
	}
	if got := fetchKeys(t, c1); got != "a,c" || !k.alive() {
		t.Fatalf("after SIGTERM/SIGHUP/SIGINT: alive %v, holds %q", k.alive(), got)
	}
	held = fetch(t, c1)
	roundTrip(t, held[0].Fd, reads["a"], "after the signals")
	closeHeld(held)

	// SIGKILL is the way to stop it; clients see ErrNoKeeper.
	k.kill(t)
	if err := c1.Ping(); !errors.Is(err, ErrNoKeeper) {
		t.Errorf("ping a killed keeper: %v, want ErrNoKeeper", err)
	}
	if _, err := c1.Fetch(); !errors.Is(err, ErrNoKeeper) {
		t.Errorf("fetch from a killed keeper: %v, want ErrNoKeeper", err)
	}
	if _, err := Dial(socket); !errors.Is(err, ErrNoKeeper) {
		t.Errorf("dial a killed keeper: %v, want ErrNoKeeper", err)
	}
	expectEOF(t, reads["a"])
	expectEOF(t, reads["c"])
}

// TestStartRace: two slimds start a keeper at once; one keeper wins, the
// other exits with ErrRunning, and both clients reach the winner.
func TestStartRace(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "keeper.sock")
	logPath := socket + ".log"
	cmd := []string{os.Args[0], "keeper", "--socket", socket, "--log", logPath}
	var wg sync.WaitGroup
	clients := make([]*Client, 2)
	errs := make([]error, 2)
	for i := range clients {
		wg.Go(func() { clients[i], errs[i] = Start(socket, cmd) })
	}
	wg.Wait()
	var pidfd = -1
	for i, c := range clients {
		if errs[i] != nil {
			t.Errorf("Start %d: %v", i, errs[i])
			continue
		}
		defer c.Close()
		if pidfd < 0 {
			k := &keeperProc{pid: c.PID()}
			var err error
			if k.pidfd, err = unix.PidfdOpen(k.pid, 0); err != nil {
				t.Fatal(err)
			}
			pidfd = k.pidfd
			t.Cleanup(func() {
				k.kill(t)
				unix.Close(k.pidfd)
			})
		}
	}
	if t.Failed() {
		t.Logf("keeper log:\n%s", readFile(logPath))
		return
	}
	if clients[0].PID() != clients[1].PID() {
		t.Errorf("clients reached keepers %d and %d", clients[0].PID(), clients[1].PID())
	}
	if log := readFile(logPath); strings.Contains(log, "DATA RACE") {
		t.Errorf("keeper reported a data race:\n%s", log)
	}
}

// TestStartFails: a keeper command that cannot serve fails Start quickly.
func TestStartFails(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "keeper.sock")
	begin := time.Now()
	_, err := Start(socket, []string{"/bin/false"})
	if err == nil {
		t.Fatal("Start with /bin/false succeeded")
	}
	if d := time.Since(begin); d > startTimeout/2 {
		t.Errorf("failing Start took %v", d)
	}
	t.Logf("Start: %v", err)
	if _, err := Start(socket, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Start without a command: %v, want ErrInvalid", err)
	}
	if _, err := Start(socket, []string{filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("Start of a missing binary succeeded")
	}
}
