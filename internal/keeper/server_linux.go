package keeper

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sort"
	"sync"
	"time"

	"github.com/slimnet/slim/internal/unixsock"
	"golang.org/x/sys/unix"
)

const (
	// maxHeld bounds the fds one keeper holds: one per supervised container
	// process tree, so this is far beyond any real host, yet it stops a
	// runaway client before the keeper runs out of fds.
	maxHeld = 1 << 16
	// maxConns bounds the connections served at once; more wait in the
	// listen backlog. slimd keeps one; a restarting slimd briefly two.
	maxConns = 16
	// replyTimeout bounds one reply write: the client waits for it, so
	// only a client that stopped reading hits it.
	replyTimeout = 10 * time.Second
	// maxErrText bounds the text of an error reply.
	maxErrText = 512
)

// Serve runs the keeper on socketPath until ctx ends (see the package doc).
// It ignores SIGTERM, SIGINT and SIGHUP for the whole process: call it from
// the keeper's own main. When ctx ends it closes every fd it holds and
// removes its socket. If another keeper serves the path it returns
// ErrRunning.
func Serve(ctx context.Context, socketPath string, log *slog.Logger) error {
	signal.Ignore(unix.SIGTERM, unix.SIGINT, unix.SIGHUP)
	return serve(ctx, socketPath, log)
}

// serve is Serve without touching the process's signal handling, for
// tests that run it in-process.
func serve(ctx context.Context, socketPath string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s, err := newServer(socketPath, log)
	if err != nil {
		return err
	}
	return s.run(ctx)
}

// entry is one held fd.
type entry struct {
	key     string
	meta    []byte
	fd      int
	id      uint64 // epoll token; never reused
	watched bool
}

type server struct {
	path string
	log  *slog.Logger
	ln   *unixsock.Listener
	lock int // the flock'ed lock file

	ep   int // epoll set of the held fds, plus wake
	wake int // eventfd: stops the watcher

	mu     sync.Mutex
	held   map[string]*entry
	byID   map[uint64]*entry
	nextID uint64
	conns  map[*net.UnixConn]struct{}
	ending bool // set by shutdown: connections accepted later are closed

	stopOnce sync.Once
}

func newServer(path string, log *slog.Logger) (_ *server, err error) {
	s := &server{path: path, log: log, lock: -1, ep: -1, wake: -1,
		held: map[string]*entry{}, byID: map[uint64]*entry{}, nextID: 1, conns: map[*net.UnixConn]struct{}{}}
	done := false
	defer func() {
		if !done {
			s.closeFiles()
		}
	}()
	// The lock first: once we have it, no other keeper is alive on this
	// path, and whatever socket is there is stale.
	lockPath := path + ".lock"
	s.lock, err = unix.Open(lockPath, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keeper lock %s: %w", lockPath, err)
	}
	if err := unix.Flock(s.lock, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("keeper socket %s: %w", path, ErrRunning)
		}
		return nil, fmt.Errorf("keeper lock %s: %w", lockPath, err)
	}
	// Someone serving without our lock (an older keeper): leave it.
	if s.ln, err = unixsock.Listen("unixpacket", path); errors.Is(err, unixsock.ErrInUse) {
		return nil, fmt.Errorf("keeper socket %s: %w", path, ErrRunning)
	} else if err != nil {
		return nil, fmt.Errorf("keeper: %w", err)
	}
	if s.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("keeper epoll: %w", err)
	}
	if s.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("keeper eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // token 0 is the wake-up
	if err := unix.EpollCtl(s.ep, unix.EPOLL_CTL_ADD, s.wake, &ev); err != nil {
		return nil, fmt.Errorf("keeper epoll add: %w", err)
	}
	done = true
	return s, nil
}

// closeFiles releases the socket, epoll and lock; the held fds are closed
// by run.
func (s *server) closeFiles() {
	if s.ln != nil {
		s.ln.Close() // removes the socket if it is still ours
	}
	for _, fd := range []int{s.wake, s.ep, s.lock} { // the lock last
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

func (s *server) run(ctx context.Context) error {
	s.log.Info("keeper serving", "socket", s.path, "pid", os.Getpid())
	var wg sync.WaitGroup
	wg.Go(func() {
		// Without hang-up detection fds of ended containers leak until
		// slimd drops them; stopping instead would close every fd and
		// break the containers. So log and keep serving.
		if err := s.watch(); err != nil {
			s.log.Error("keeper: hang-up watcher stopped", "err", err)
		}
	})

	stop := context.AfterFunc(ctx, s.shutdown)
	s.accept(ctx, &wg)
	stop()
	s.shutdown() // waits for one AfterFunc may be running
	wg.Wait()

	s.mu.Lock()
	n := len(s.held)
	for _, e := range s.held {
		s.release(e)
	}
	s.mu.Unlock()
	s.closeFiles()
	s.log.Info("keeper stopped", "socket", s.path, "closed_fds", n)
	return nil
}

// shutdown stops accepting, wakes the watcher and closes every connection,
// which ends their goroutines. It runs once; a second caller waits until
// the first is done (so run never closes the eventfd under it).
func (s *server) shutdown() {
	s.stopOnce.Do(func() {
		s.ln.Close()
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(s.wake, one[:])
		s.mu.Lock()
		defer s.mu.Unlock()
		s.ending = true
		for c := range s.conns {
			c.Close()
		}
	})
}

// accept serves connections until ctx ends or the listener is closed.
func (s *server) accept(ctx context.Context, wg *sync.WaitGroup) {
	slots := make(chan struct{}, maxConns)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		c, err := s.ln.AcceptUnix()
		if err != nil {
			<-slots
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off briefly rather than spin.
			s.log.Warn("keeper accept", "err", err)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return
			}
			continue
		}
		s.mu.Lock()
		if s.ending {
			s.mu.Unlock()
			c.Close()
			<-slots
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		wg.Go(func() {
			defer func() { <-slots }()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		})
	}
}

// serveConn answers requests until the client leaves or breaks the
// protocol. Nothing a client sends affects fds held for other keys.
func (s *server) serveConn(c *net.UnixConn) {
	defer c.Close()
	log := s.log
	cred, err := peerCred(c)
	if err != nil {
		log.Warn("keeper: peer credentials", "err", err)
		return
	}
	log = log.With("peer_pid", cred.Pid)
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		log.Warn("keeper: peer refused", "peer_uid", cred.Uid)
		return
	}
	cn := newConn(c)
	for {
		m, fds, err := cn.recv(time.Time{})
		if err != nil {
			if !lost(err) {
				log.Warn("keeper: client disconnected", "err", err)
			}
			return
		}
		if err := s.handle(cn, m, fds, log); err != nil {
			if !lost(err) {
				log.Warn("keeper: client disconnected", "op", string(m.op), "err", err)
			}
			return
		}
	}
}

// handle runs one request; it owns fds. An error closes the connection.
func (s *server) handle(cn *conn, m message, fds []int, log *slog.Logger) error {
	wantFDs := 0
	if m.op == opPut {
		wantFDs = 1
	}
	if len(fds) != wantFDs {
		closeAll(fds)
		return fmt.Errorf("%w: op %q with %d fds", errProtocol, m.op, len(fds))
	}
	deadline := time.Now().Add(replyTimeout)
	ok := message{op: opOK}
	switch m.op {
	case opHello:
		return cn.send(ok, -1, deadline)
	case opPut:
		if err := checkKeyMeta(m.key, m.meta); err != nil {
			closeAll(fds)
			return fmt.Errorf("%w: %w", errProtocol, err)
		}
		if err := s.put(m.key, m.meta, fds[0]); err != nil {
			unix.Close(fds[0])
			return cn.send(errorReply(err), -1, deadline)
		}
		log.Debug("keeper: fd held", "key", m.key, "fd", fds[0])
		return cn.send(ok, -1, deadline)
	case opDrop:
		if err := checkKeyMeta(m.key, nil); err != nil || len(m.meta) != 0 {
			return fmt.Errorf("%w: bad drop", errProtocol)
		}
		if s.drop(m.key) {
			log.Debug("keeper: fd dropped", "key", m.key)
		}
		return cn.send(ok, -1, deadline)
	case opFetch:
		if m.key != "" || len(m.meta) != 0 {
			return fmt.Errorf("%w: bad fetch", errProtocol)
		}
		return s.fetch(cn)
	default:
		return fmt.Errorf("%w: unknown op %q", errProtocol, m.op)
	}
}

func errorReply(err error) message {
	text := err.Error()
	if len(text) > maxErrText {
		text = text[:maxErrText]
	}
	return message{op: opError, meta: []byte(text)}
}

// put stores fd under key, replacing (and closing) what was there.
func (s *server) put(key string, meta []byte, fd int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.held[key]
	if old == nil && len(s.held) >= maxHeld {
		return fmt.Errorf("holding %d fds already", len(s.held))
	}
	e := &entry{key: key, meta: append([]byte(nil), meta...), fd: fd, id: s.nextID}
	s.nextID++
	// Only hang-ups and errors are reported (they always are), edge
	// triggered: a pending notification (EPOLLIN) never wakes us, and an
	// fd in a lasting error state cannot make us spin. A hang-up that is
	// already there is reported at once.
	ev := unix.EpollEvent{Events: unix.EPOLLET}
	setToken(&ev, e.id)
	if err := unix.EpollCtl(s.ep, unix.EPOLL_CTL_ADD, fd, &ev); err == nil {
		e.watched = true
	} else if !errors.Is(err, unix.EPERM) { // EPERM: regular files cannot be polled
		s.log.Warn("keeper: cannot watch fd for hang-up", "key", key, "err", err)
	}
	if old != nil {
		s.release(old)
	}
	s.held[key] = e
	s.byID[e.id] = e
	return nil
}

// drop closes the fd under key and reports whether there was one.
func (s *server) drop(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.held[key]
	if e == nil {
		return false
	}
	s.release(e)
	return true
}

// release forgets e and closes its fd. The fd leaves the epoll set before
// it is closed (see the package doc). Called with s.mu held.
func (s *server) release(e *entry) {
	if e.watched {
		unix.EpollCtl(s.ep, unix.EPOLL_CTL_DEL, e.fd, nil)
	}
	unix.Close(e.fd)
	delete(s.held, e.key)
	delete(s.byID, e.id)
}

// fetch sends every held fd, each as a dup made just before sending, then
// the count.
func (s *server) fetch(cn *conn) error {
	s.mu.Lock()
	keys := make([]string, 0, len(s.held))
	for k := range s.held {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	sort.Strings(keys)
	sent := 0
	for _, k := range keys {
		s.mu.Lock()
		e := s.held[k]
		if e == nil { // dropped meanwhile
			s.mu.Unlock()
			continue
		}
		meta := e.meta
		dup, err := unix.FcntlInt(uintptr(e.fd), unix.F_DUPFD_CLOEXEC, 0)
		s.mu.Unlock()
		if err != nil {
			return cn.send(errorReply(fmt.Errorf("dup fd of %q: %w", k, err)), -1, time.Now().Add(replyTimeout))
		}
		err = cn.send(message{op: opItem, key: k, meta: meta}, dup, time.Now().Add(replyTimeout))
		unix.Close(dup)
		if err != nil {
			return err
		}
		sent++
	}
	var count [4]byte
	binary.LittleEndian.PutUint32(count[:], uint32(sent))
	return cn.send(message{op: opEnd, meta: count[:]}, -1, time.Now().Add(replyTimeout))
}

// watch closes held fds that hang up, until the wake eventfd fires.
func (s *server) watch() error {
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(s.ep, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("keeper epoll wait: %w", err)
		}
		for _, ev := range events[:n] {
			id := tokenOf(&ev)
			if id == 0 {
				return nil
			}
			if ev.Events&unix.EPOLLHUP == 0 {
				continue // EPOLLERR alone: keep holding
			}
			s.mu.Lock()
			e := s.byID[id]
			if e != nil {
				s.release(e)
			}
			s.mu.Unlock()
			if e != nil {
				s.log.Debug("keeper: fd hung up, closed", "key", e.key)
			}
		}
	}
}

// The epoll token is our entry id, spread over the event's 8 data bytes
// (x/sys/unix names them Fd and Pad). Never the fd number: numbers are
// reused, ids are not.
func setToken(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func tokenOf(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
