package keeper

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/poll"
	"github.com/slimnet/slim/internal/testenv"
	"golang.org/x/sys/unix"
)

// inProc is a keeper served in this process (without the signal handling
// of Serve), stopped through its context.
type inProc struct {
	srv    *server
	path   string
	cancel context.CancelFunc
	errc   chan error
	once   sync.Once
	err    error
}

func startServer(t *testing.T) *inProc {
	t.Helper()
	return startServerAt(t, filepath.Join(t.TempDir(), "keeper.sock"))
}

func startServerAt(t *testing.T, path string) *inProc {
	t.Helper()
	srv, err := newServer(path, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &inProc{srv: srv, path: path, cancel: cancel, errc: make(chan error, 1)}
	go func() { s.errc <- srv.run(ctx) }()
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	poll.Until(t, waitTimeout, func() error {
		select {
		case err := <-s.errc:
			s.errc <- err
			return fmt.Errorf("serve returned early: %w", err)
		default:
		}
		c, err := Dial(path)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return s
}

// settle waits until the server serves exactly n connections, so that fd
// counts do not catch it closing one.
func (s *inProc) settle(t *testing.T, n int) {
	t.Helper()
	poll.Until(t, waitTimeout, func() error {
		s.srv.mu.Lock()
		defer s.srv.mu.Unlock()
		if len(s.srv.conns) != n {
			return fmt.Errorf("server has %d connections, want %d", len(s.srv.conns), n)
		}
		return nil
	})
}

// stop cancels the server and returns what serve returned.
func (s *inProc) stop() error {
	s.once.Do(func() {
		s.cancel()
		select {
		case s.err = <-s.errc:
		case <-time.After(waitTimeout):
			s.err = errors.New("serve did not return after cancel")
		}
	})
	return s.err
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// fetch fetches; the caller closes the fds (closeHeld).
func fetch(t *testing.T, c *Client) []Held {
	t.Helper()
	held, err := c.Fetch()
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	return held
}

// fetchKeys fetches, closes the fds and returns the keys.
func fetchKeys(t *testing.T, c *Client) string {
	t.Helper()
	held := fetch(t, c)
	closeHeld(held)
	return keys(held)
}

func TestServe(t *testing.T) {
	s := startServer(t)
	fi, err := os.Lstat(s.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	c := dial(t, s.path)
	if c.PID() != os.Getpid() {
		t.Errorf("PID() = %d, want ours (%d)", c.PID(), os.Getpid())
	}

	// Hand over three pipes' write ends and keep only the read ends.
	reads := map[string]*os.File{}
	for _, k := range []string{"c", "a", "b"} {
		r, w := pipe(t)
		if err := c.Put(k, []byte("meta-"+k), fdOf(w)); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
		w.Close()
		reads[k] = r
	}
	held := fetch(t, c)
	if got := keys(held); got != "a,b,c" {
		t.Fatalf("fetched %q, want a,b,c (sorted)", got)
	}
	for _, h := range held {
		if string(h.Meta) != "meta-"+h.Key {
			t.Errorf("%s: meta %q", h.Key, h.Meta)
		}
		roundTrip(t, h.Fd, reads[h.Key], "through-"+h.Key)
	}
	closeHeld(held)

	// Replacing a key closes the old fd.
	r2, w2 := pipe(t)
	if err := c.Put("a", nil, fdOf(w2)); err != nil {
		t.Fatal(err)
	}
	w2.Close()
	expectEOF(t, reads["a"])

	// Drop closes; an absent key is fine.
	if err := c.Drop("b"); err != nil {
		t.Fatal(err)
	}
	expectEOF(t, reads["b"])
	if err := c.Drop("never-there"); err != nil {
		t.Fatalf("drop of an absent key: %v", err)
	}

	// A second client sees the same, and the limits are exact.
	c2 := dial(t, s.path)
	r3, w3 := pipe(t)
	maxKey := strings.Repeat("k", MaxKey)
	if err := c2.Put(maxKey, bytes.Repeat([]byte{0xff}, MaxMeta), fdOf(w3)); err != nil {
		t.Fatalf("put at the limits: %v", err)
	}
	w3.Close()
	held = fetch(t, c2)
	if got := keys(held); got != "a,c,"+maxKey {
		t.Fatalf("fetched %q", got)
	}
	if len(held[0].Meta) != 0 || len(held[2].Meta) != MaxMeta {
		t.Errorf("meta lengths %d, %d", len(held[0].Meta), len(held[2].Meta))
	}
	roundTrip(t, held[0].Fd, r2, "replaced")
	roundTrip(t, held[1].Fd, reads["c"], "still-c")
	roundTrip(t, held[2].Fd, r3, "max")
	closeHeld(held)

	for _, bad := range []struct {
		key  string
		meta []byte
		fd   int
	}{
		{"", nil, 0},
		{maxKey + "k", nil, 0},
		{"k", make([]byte, MaxMeta+1), 0},
		{"k", nil, -1},
	} {
		if err := c.Put(bad.key, bad.meta, bad.fd); !errors.Is(err, ErrInvalid) {
			t.Errorf("put key %d bytes meta %d bytes fd %d: %v, want ErrInvalid", len(bad.key), len(bad.meta), bad.fd, err)
		}
	}
	if err := c.Drop(""); !errors.Is(err, ErrInvalid) {
		t.Errorf("drop of an empty key: %v, want ErrInvalid", err)
	}
	// Rejected arguments never reach the keeper: the client still works.
	if got := fetchKeys(t, c); got != "a,c,"+maxKey {
		t.Fatalf("fetch after rejected puts: %q", got)
	}

	// Context end: serve returns, closes every fd and removes its socket.
	if err := s.stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	expectEOF(t, r2)
	expectEOF(t, reads["c"])
	expectEOF(t, r3)
	if _, err := os.Lstat(s.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := Dial(s.path); !errors.Is(err, ErrNoKeeper) {
		t.Errorf("dial after stop: %v, want ErrNoKeeper", err)
	}
	if _, err := c.Fetch(); !errors.Is(err, ErrNoKeeper) {
		t.Errorf("fetch on a dead keeper: %v, want ErrNoKeeper", err)
	}
	if err := c.Put("x", nil, 0); !errors.Is(err, ErrNoKeeper) {
		t.Errorf("put on a dead keeper: %v, want ErrNoKeeper", err)
	}
}

func TestServeRunning(t *testing.T) {
	s := startServer(t)
	start := time.Now()
	err := serve(context.Background(), s.path, testenv.Logger(t))
	if !errors.Is(err, ErrRunning) {
		t.Fatalf("second keeper on %s: %v, want ErrRunning", s.path, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ErrRunning took %v", d)
	}
	dial(t, s.path) // the first one still serves

	// A stale socket (its server died without removing it) is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: stale, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(stale); err != nil {
		t.Fatal(err)
	}
	startServerAt(t, stale)
	dial(t, stale)

	// Not a socket: left alone.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = serve(context.Background(), file, testenv.Logger(t))
	if err == nil || errors.Is(err, ErrRunning) {
		t.Fatalf("keeper over a regular file: %v, want an error", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "data" {
		t.Errorf("regular file changed to %q", b)
	}

	// Nobody at a path: ErrNoKeeper.
	if _, err := Dial(filepath.Join(t.TempDir(), "none.sock")); !errors.Is(err, ErrNoKeeper) {
		t.Errorf("dial nothing: %v, want ErrNoKeeper", err)
	}
}

// TestServeHangup: the keeper closes an fd that reports POLLHUP by itself
// (a pipe's read end once every writer is gone), and only that one.
func TestServeHangup(t *testing.T) {
	s := startServer(t)
	c := dial(t, s.path)

	r1, w1 := pipe(t) // will hang up
	r2, w2 := pipe(t) // keeps its writer
	ev, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ev)
	reg, err := os.CreateTemp(t.TempDir(), "regular") // cannot be polled: held unwatched
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	for k, fd := range map[string]int{"hup": fdOf(r1), "live": fdOf(r2), "eventfd": ev, "regular": fdOf(reg)} {
		if err := c.Put(k, nil, fd); err != nil {
			t.Fatal(err)
		}
	}
	r1.Close()
	r2.Close()
	if got := fetchKeys(t, c); got != "eventfd,hup,live,regular" {
		t.Fatalf("fetched %q", got)
	}
	w1.Close() // the last writer: the keeper's read end reports POLLHUP
	poll.Until(t, waitTimeout, func() error {
		held, err := c.Fetch()
		if err != nil {
			return err
		}
		closeHeld(held)
		if got := keys(held); got != "eventfd,live,regular" {
			return fmt.Errorf("keeper holds %q, want the hung-up pipe gone", got)
		}
		return nil
	})
	// The live pipe is still the same pipe.
	held := fetch(t, c)
	var buf [8]byte
	if _, err := unix.Write(fdOf(w2), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if n, err := unix.Read(held[1].Fd, buf[:]); n != 1 || err != nil {
		t.Errorf("read from the kept pipe: %d, %v", n, err)
	}
	closeHeld(held)
}

// rawConn is a client that speaks whatever it is told.
func rawConn(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	nc, err := net.Dial("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc.(*net.UnixConn)
}

func rawMsg(op byte, version byte, key string, meta []byte) []byte {
	b := message{op: op, key: key, meta: meta}.marshal()
	b[1] = version
	return b
}

// TestServeMalformed: a client that breaks the protocol is disconnected,
// every fd it sent is closed, and nothing held is touched.
func TestServeMalformed(t *testing.T) {
	s := startServer(t)
	c := dial(t, s.path)
	r, w := pipe(t)
	if err := c.Put("precious", []byte("m"), fdOf(w)); err != nil {
		t.Fatal(err)
	}
	w.Close()

	devnull := func(t *testing.T) int {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	lenMismatch := rawMsg(opPut, protoVersion, "k", nil)
	lenMismatch = append(lenMismatch, 'x')
	tooLongKey := rawMsg(opPut, protoVersion, "k", nil)
	binary.LittleEndian.PutUint16(tooLongKey[2:], MaxKey+1)
	tooLongKey = append(tooLongKey, make([]byte, MaxKey)...)
	hugeMeta := rawMsg(opPut, protoVersion, "k", nil)
	binary.LittleEndian.PutUint32(hugeMeta[4:], 1<<31)
	cases := []struct {
		name string
		data []byte
		nfds int
	}{
		{"short", []byte("x"), 1},
		{"empty-ish", []byte{0}, 0},
		{"version", rawMsg(opPut, protoVersion+1, "k", nil), 1},
		{"put-no-fd", rawMsg(opPut, protoVersion, "k", nil), 0},
		{"put-two-fds", rawMsg(opPut, protoVersion, "k", nil), 2},
		{"put-empty-key", rawMsg(opPut, protoVersion, "", nil), 1},
		{"drop-with-fd", rawMsg(opDrop, protoVersion, "precious", nil), 1},
		{"drop-with-meta", rawMsg(opDrop, protoVersion, "precious", []byte("m")), 0},
		{"hello-with-fd", rawMsg(opHello, protoVersion, "", nil), 1},
		{"fetch-with-key", rawMsg(opFetch, protoVersion, "k", nil), 0},
		{"reply-op", rawMsg(opOK, protoVersion, "", nil), 0},
		{"unknown-op", rawMsg('Z', protoVersion, "", nil), 1},
		{"length-mismatch", lenMismatch, 1},
		{"key-too-long", tooLongKey, 1},
		{"meta-huge", hugeMeta, 1},
		{"oversized", make([]byte, maxMsg+100), 1},
		{"many-fds", rawMsg(opPut, protoVersion, "k", nil), 12},
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: keeper\r\n\r\n"), 3},
	}
	s.settle(t, 1) // only c: the baseline must not catch a closing one
	base := countFDs(t, "self")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc := rawConn(t, s.path)
			var fds []int
			for range tc.nfds {
				fds = append(fds, devnull(t))
			}
			var oob []byte
			if len(fds) > 0 {
				oob = unix.UnixRights(fds...)
			}
			if _, _, err := nc.WriteMsgUnix(tc.data, oob, nil); err != nil {
				t.Fatalf("send: %v", err)
			}
			closeAll(fds) // the keeper got its own copies
			nc.SetReadDeadline(time.Now().Add(waitTimeout))
			buf := make([]byte, maxMsg)
			oobBuf := make([]byte, 64)
			n, oobn, _, _, err := nc.ReadMsgUnix(buf, oobBuf)
			if !lost(err) {
				t.Fatalf("keeper answered %q (%d oob bytes), %v; want the connection closed", buf[:n], oobn, err)
			}
			nc.Close()
		})
	}
	s.settle(t, 1)
	if n := countFDs(t, "self"); n != base {
		t.Fatalf("%d fds open, %d before the malformed messages", n, base)
	}
	held := fetch(t, c)
	if keys(held) != "precious" || string(held[0].Meta) != "m" {
		t.Fatalf("after malformed clients the keeper holds %q", keys(held))
	}
	roundTrip(t, held[0].Fd, r, "still here")
	closeHeld(held)
}

// TestClientFDLeak: a client's whole life, its failures included, leaves
// no fd behind.
func TestClientFDLeak(t *testing.T) {
	s := startServer(t)
	none := filepath.Join(t.TempDir(), "none.sock")
	r, w := pipe(t)
	wfd := fdOf(w)
	cycle := func() {
		c, err := Dial(s.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, k := range []string{"x", "y"} {
			if err := c.Put(k, []byte(k), wfd); err != nil {
				t.Fatal(err)
			}
		}
		held, err := c.Fetch()
		if err != nil {
			t.Fatal(err)
		}
		closeHeld(held)
		for _, k := range []string{"x", "y"} {
			if err := c.Drop(k); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := Dial(none); !errors.Is(err, ErrNoKeeper) {
			t.Fatalf("dial nothing: %v", err)
		}
		if err := c.Put("", nil, wfd); !errors.Is(err, ErrInvalid) {
			t.Fatal(err)
		}
	}
	cycle() // warm up (the runtime's own fds, the netpoller)
	s.settle(t, 0)
	base := countFDs(t, "self")
	for range 20 {
		cycle()
	}
	s.settle(t, 0)
	if n := countFDs(t, "self"); n != base {
		t.Fatalf("%d fds open after 20 client lives, %d before", n, base)
	}
	// A failing Start (the command exits at once) cleans up too.
	if _, err := Start(none, []string{"/bin/false"}); err == nil {
		t.Fatal("Start with /bin/false succeeded")
	}
	// And a client whose keeper goes away.
	c := dial(t, s.path)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(); !errors.Is(err, ErrNoKeeper) {
		t.Fatalf("fetch on a stopped keeper: %v", err)
	}
	c.Close()
	r.Close()
	w.Close()
	// The stopped server released its socket, epoll, eventfd and lock.
	if n := countFDs(t, "self"); n != base-6 {
		t.Fatalf("%d fds open, %d at the start with a server (4 fds) and a pipe (2)", n, base)
	}
}

// TestConcurrentClients: several clients put, fetch and drop at once.
func TestConcurrentClients(t *testing.T) {
	s := startServer(t)
	r, w := pipe(t)
	wfd := fdOf(w)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 4 {
		wg.Go(func() {
			c, err := Dial(s.path)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for j := range 50 {
				k := fmt.Sprintf("c%d-%d", i, j%5)
				if err := c.Put(k, []byte(k), wfd); err != nil {
					errs <- err
					return
				}
				held, err := c.Fetch()
				if err != nil {
					errs <- err
					return
				}
				closeHeld(held)
				if j%3 == 0 {
					if err := c.Drop(k); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c := dial(t, s.path)
	held := fetch(t, c)
	for _, h := range held {
		roundTrip(t, h.Fd, r, h.Key)
	}
	closeHeld(held)
	t.Logf("%d keys held after the storm", len(held))
}
