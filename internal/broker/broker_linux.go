package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/cgroupfs"
	"github.com/slimnet/slim/internal/keeper"
	"github.com/slimnet/slim/internal/seccomp"
	"golang.org/x/sys/unix"
)

// Config wires the broker to the rest of slimd.
type Config struct {
	HostIP    netip.Addr // this host's (IPv4) underlay address: host sockets bind here
	View      View
	Resolver  Resolver
	Ports     Ports
	Publisher Publisher
	Tagger    Tagger   // nil: no address rewriting
	Permits   Permits  // nil: connects are left to the kernel (the overlay)
	Recorder  Recorder // nil: every option of a socket is read
	Keeper    Keeper   // nil: fds die with slimd
	Journal   Journal  // nil: no journal
	Policy    Policy   // nil: no network policy
	Log       *slog.Logger
	Metrics   *Metrics
	// Workers is how many goroutines of one supervised process tree
	// receive and handle its notifications (default 1). Handlers never
	// wait for a peer, and listen(), which waits for the store, is handed
	// to a goroutine of its own. One receiver is the fastest: with more,
	// each notification passes the receiving turn to another goroutine
	// and the Go runtime hands processors between threads, context
	// switches that cost more than the handler on a small machine
	// (measured: 3.1 vs 5.6 switches and 15% more connections per second
	// with 4 connecting threads on 2 vCPUs).
	Workers int
	// ReapInterval is how often closed listeners are looked for.
	ReapInterval time.Duration
}

// yieldEvery: a receiving goroutine that never passes through the
// scheduler looks to Go's sysmon like one running for too long: every
// 10 ms sysmon signals its thread, takes its processor and, having done
// so, goes back to waking every 20 us (measured: 13% of slimd's CPU under
// a connect load). Yielding now and then keeps it quiet.
const yieldEvery = 5 * time.Millisecond

// publishTimeout bounds publishing a listener in the store from inside a
// listen() handler: the application waits for it.
const publishTimeout = 5 * time.Second

// Broker supervises notification fds and swaps sockets.
type Broker struct {
	cfg        Config
	hostCookie uint64
	defaults   map[int]sockOpts // fresh host socket options by family

	mu        sync.Mutex
	sessions  map[*session]struct{}
	listeners map[netip.AddrPort]*listenerGroup // by virtual address
	byPort    map[uint16]*listenerGroup         // by host port
	// unwithdrawn are closed listeners whose records could not be
	// withdrawn yet (the store failed): retried at each reap.
	unwithdrawn []netip.AddrPort
	growing     map[growKey]bool                 // port block claims in flight
	creating    map[netip.AddrPort]chan struct{} // listener groups being created: closed when done
	seenBlocks  map[seenKey]time.Time            // when each container's port block was first seen
	nextID      uint64                           // session numbers
	pool        *socketPool
	recorded    map[string]*recording // by cgroup directory
	wg          sync.WaitGroup
}

// recording is the recorders on one cgroup, shared by its sessions.
type recording struct {
	c        io.Closer
	sessions int
}

// listenerGroup is one host listener port and the virtual addresses it
// serves; several host sockets share it through SO_REUSEPORT. Whether a
// new socket may join is the kernel's decision: its bind to the port.
type listenerGroup struct {
	hostPort  uint16
	vips      []netip.AddrPort
	container string
	ifName    string
	created   time.Time
}

// New prepares a broker in the current (host) network namespace.
func New(cfg Config) (*Broker, error) {
	if !cfg.HostIP.Is4() {
		return nil, fmt.Errorf("broker: host ip %v: want IPv4", cfg.HostIP)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.ReapInterval <= 0 {
		cfg.ReapInterval = 2 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	b := &Broker{
		cfg:        cfg,
		defaults:   map[int]sockOpts{},
		sessions:   map[*session]struct{}{},
		listeners:  map[netip.AddrPort]*listenerGroup{},
		byPort:     map[uint16]*listenerGroup{},
		growing:    map[growKey]bool{},
		creating:   map[netip.AddrPort]chan struct{}{},
		seenBlocks: map[seenKey]time.Time{},
		// Session numbers survive in the keeper's metadata and the
		// journal; starting from the clock keeps a successor's new ones
		// apart from its predecessor's.
		nextID:   uint64(time.Now().UnixNano()),
		pool:     newSocketPool(),
		recorded: map[string]*recording{},
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		if err != nil {
			return nil, fmt.Errorf("broker: probe socket: %w", err)
		}
		b.defaults[fam] = readOpts(fd, fam, true, allOpts)
		if fam == unix.AF_INET {
			b.hostCookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		}
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("broker: netns cookie: %w", err)
		}
	}
	return b, nil
}

// ConnKey is a host socket's 4-tuple on the wire.
type ConnKey struct{ Local, Remote netip.AddrPort }

// Sessions is the number of supervised notification fds.
func (b *Broker) Sessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sessions)
}

// Metrics returns the broker's collectors.
func (b *Broker) Metrics() *Metrics { return b.cfg.Metrics }

// Adopt starts supervising the notification fd of the process tree whose
// first process is pid (its network namespace identifies the container).
// The broker owns fd from now on.
func (b *Broker) Adopt(ctx context.Context, pid int, fd int) error {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	b.mu.Unlock()
	s := b.newSession(id, pid, fd)
	if b.cfg.Keeper != nil {
		// Before anything is handled (and before the sender is
		// acknowledged): from now on the fd outlives us.
		if err := b.cfg.Keeper.Put(s.key(), s.meta(), fd); err != nil {
			b.cfg.Log.Warn("broker: keeper did not take the fd; it dies with slimd", "pid", pid, "err", err)
		}
	}
	b.start(ctx, s, nil)
	return nil
}

// SessionMeta is what the keeper stores with a notification fd.
type SessionMeta struct {
	Session uint64 `json:"session"`
	PID     int    `json:"pid"`
}

// Resume takes back a notification fd that a predecessor left with the
// keeper, and finishes the notifications the journal says it had received
// but not answered.
func (b *Broker) Resume(ctx context.Context, meta SessionMeta, fd int, leftovers []keeper.Entry) {
	b.mu.Lock()
	b.nextID = max(b.nextID, meta.Session)
	b.mu.Unlock()
	b.start(ctx, b.newSession(meta.Session, meta.PID, fd), leftovers)
}

// Rekeep hands every held fd to the keeper again (after the keeper was
// restarted).
func (b *Broker) Rekeep() error {
	if b.cfg.Keeper == nil {
		return nil
	}
	b.mu.Lock()
	ss := make([]*session, 0, len(b.sessions))
	for s := range b.sessions {
		ss = append(ss, s)
	}
	b.mu.Unlock()
	var errs []error
	for _, s := range ss {
		errs = append(errs, b.cfg.Keeper.Put(s.key(), s.meta(), s.l.Fd()))
	}
	return errors.Join(errs...)
}

func (b *Broker) newSession(id uint64, pid, fd int) *session {
	l := seccomp.NewListener(fd)
	// Wake the trapped thread on the answering CPU (Linux 6.6): the
	// broker goroutine goes back to waiting right after answering, so a
	// cross-CPU wake-up per round trip is pure cost. Older kernels refuse;
	// nothing depends on it.
	_ = l.SetSyncWakeUp()
	log := b.cfg.Log.With("pid", pid)
	return &session{b: b, id: id, l: l, pid: pid, log: log, debug: log.Enabled(context.Background(), slog.LevelDebug),
		pidfds: map[int]int{}}
}

func (b *Broker) start(ctx context.Context, s *session, leftovers []keeper.Entry) {
	b.mu.Lock()
	b.sessions[s] = struct{}{}
	b.mu.Unlock()
	b.cfg.Metrics.Sessions.Inc()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer b.record(s)()
		for _, e := range leftovers {
			n := seccomp.Notif{ID: e.ID, PID: e.PID, Nr: e.Nr, Arch: e.Arch, Args: e.Args}
			if s.l.IDValid(n.ID) != nil {
				continue // answered, or the thread is gone
			}
			s.log.Info("broker: finishing a notification left by the previous slimd", "syscall", n.Syscall().String())
			s.handle(ctx, n, true)
		}
		gone := s.run(ctx)
		b.mu.Lock()
		delete(b.sessions, s)
		b.mu.Unlock()
		b.cfg.Metrics.Sessions.Dec()
		if gone && b.cfg.Keeper != nil {
			if err := b.cfg.Keeper.Drop(s.key()); err != nil {
				b.cfg.Log.Debug("broker: keeper drop failed", "err", err)
			}
		}
	}()
}

// record puts the recorders on the cgroup of the session's first process
// (shared with other sessions there) and returns their release. Without
// them every option of a socket is read: slower, as correct.
func (b *Broker) record(s *session) (release func()) {
	if b.cfg.Recorder == nil {
		return func() {}
	}
	cg, err := cgroupfs.Of(s.pid)
	if err != nil {
		s.log.Debug("broker: no cgroup to record socket options in", "err", err)
		return func() {}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.recorded[cg]
	if r == nil {
		c, err := b.cfg.Recorder.Record(cg)
		if err != nil {
			s.log.Warn("broker: socket option recorders not attached; connects read every option", "cgroup", cg, "err", err)
			return func() {}
		}
		r = &recording{c: c}
		b.recorded[cg] = r
	}
	r.sessions++
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if r.sessions--; r.sessions == 0 {
			r.c.Close()
			delete(b.recorded, cg)
		}
	}
}

func (s *session) key() string { return strconv.FormatUint(s.id, 10) }

func (s *session) meta() []byte {
	b, _ := json.Marshal(SessionMeta{Session: s.id, PID: s.pid})
	return b
}

// identify learns the container's network namespace from the first
// trapped thread. Not at Adopt: a launcher enters the namespace on one
// thread only and execs from it, so until the exec /proc/<pid>/ns/net
// still names the namespace it came from.
func (s *session) identify(tid uint32) error {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	if s.netnsIno != 0 {
		return nil
	}
	nsPath := fmt.Sprintf("/proc/%d/ns/net", tid)
	var st unix.Stat_t
	if err := unix.Stat(nsPath, &st); err != nil {
		return err
	}
	cookie, err := netnsCookie(nsPath)
	if err != nil {
		return err
	}
	s.cookie, s.netnsIno = cookie, st.Ino
	return nil
}

// netnsCookie is the cookie of the network namespace at path: the same
// value SO_NETNS_COOKIE reads from any socket created in it.
func netnsCookie(path string) (uint64, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		return 0, err
	}
	defer n.Close()
	var cookie uint64
	err = n.Do(func(ns.NetNS) error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	return cookie, err
}

// Run reaps closed listeners until ctx ends, then waits for the sessions.
// Their notification fds are closed on return.
func (b *Broker) Run(ctx context.Context) error {
	t := time.NewTicker(b.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			b.wg.Wait()
			b.pool.close()
			return nil
		case <-t.C:
			b.reapListeners(ctx)
		}
	}
}

// session supervises one notification fd.
type session struct {
	b   *Broker
	id  uint64 // keeper key and journal tag; survives slimd restarts
	l   *seccomp.Listener
	pid int
	log *slog.Logger

	idMu     sync.Mutex
	netnsIno uint64 // 0 until identify
	cookie   uint64

	pidMu  sync.Mutex
	pidfds map[int]int // thread id -> pidfd (see getFD)
	fdinfo seccomp.FDInfo

	// Owned by the receiving goroutine (connect runs on it).
	sabuf    [sockaddrMax]byte // the sockaddr being read
	connects uint64            // connect notifications handled, for sampling
	debug    bool              // debug logging on: per-call detail is logged
}

// run receives and handles notifications until every supervised process
// is gone (true) or ctx ends (false).
func (s *session) run(ctx context.Context) bool {
	defer s.l.Close()
	defer func() {
		s.pidMu.Lock()
		s.closePidFDsLocked()
		s.pidMu.Unlock()
		s.fdinfo.Close()
	}()
	var wg sync.WaitGroup
	var gone atomic.Bool
	for range s.b.cfg.Workers {
		wg.Go(func() {
			// One thread per receiver, blocked in the RECV ioctl and
			// handling inline (see seccomp.Receiver).
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			r, err := s.l.NewReceiver(ctx)
			if err != nil {
				s.log.Warn("broker: cannot receive", "err", err)
				return
			}
			defer r.Close()
			yielded := time.Now()
			for {
				if now := time.Now(); now.Sub(yielded) > yieldEvery {
					// See yieldEvery.
					runtime.Gosched()
					yielded = now
				}
				n, err := r.Receive()
				if err != nil {
					if errors.Is(err, seccomp.ErrNoTargets) {
						gone.Store(true)
					} else if ctx.Err() == nil && !errors.Is(err, seccomp.ErrClosed) {
						s.log.Warn("broker: receive failed", "err", err)
					}
					return
				}
				if n.Syscall() == seccomp.SysListen {
					// Publishes to the store before answering.
					wg.Go(func() { s.handle(ctx, n, false) })
					continue
				}
				s.handle(ctx, n, false)
			}
		})
	}
	wg.Wait()
	return gone.Load()
}

// container is the session's container now (endpoints come and go).
func (s *session) container() *Container {
	s.idMu.Lock()
	ino := s.netnsIno
	s.idMu.Unlock()
	if s.b.cfg.Resolver == nil {
		return nil
	}
	c, _ := s.b.cfg.Resolver.ContainerByNetns(ino)
	return c
}

// handle answers one notification. resumed marks one a predecessor
// received but did not answer.
func (s *session) handle(ctx context.Context, n seccomp.Notif, resumed bool) {
	if j := s.b.cfg.Journal; j != nil {
		if slot, ok := j.Record(keeper.Entry{Session: s.id, ID: n.ID, PID: n.PID, Nr: n.Nr, Arch: n.Arch, Args: n.Args}); ok {
			defer j.Done(slot)
		}
	}
	if err := s.identify(n.PID); err != nil {
		// The thread is gone or its namespace unreadable: let the
		// kernel answer it.
		_ = s.l.Continue(n.ID)
		return
	}
	var err error
	switch n.Syscall() {
	case seccomp.SysConnect:
		err = s.connect(ctx, n, resumed)
	case seccomp.SysListen:
		err = s.listen(ctx, n)
	case seccomp.SysBind, seccomp.SysSendto, seccomp.SysSendmsg, seccomp.SysSendmmsg:
		err = s.guardOnly(n)
	default:
		err = s.l.Continue(n.ID)
	}
	if err != nil && !errors.Is(err, seccomp.ErrGone) && !errors.Is(err, seccomp.ErrClosed) {
		s.log.Debug("broker: answer failed", "syscall", n.Syscall().String(), "err", err)
	}
}

// RestoreListener takes over a listener a predecessor published for this
// host (its host sockets live on in the container), so that its closing is
// noticed and it is withdrawn then.
func (b *Broker) RestoreListener(l api.Listener) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := netip.AddrPortFrom(l.VIP, l.Port)
	g := b.byPort[l.HostPort]
	if g == nil {
		// A second process joins only if the kernel lets its bind to
		// the host port through (SO_REUSEPORT on both), as before.
		g = &listenerGroup{hostPort: l.HostPort, container: l.ContainerID, ifName: l.IfName, created: time.Now()}
		b.byPort[l.HostPort] = g
	}
	if b.listeners[v] == nil {
		g.vips = append(g.vips, v)
		b.listeners[v] = g
	}
}

// Published lists the listener records this broker's host listeners need
// in the store (to re-publish them on a new lease).
func (b *Broker) Published() []api.Listener {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []api.Listener
	for _, g := range b.byPort {
		for _, v := range g.vips {
			out = append(out, api.Listener{VIP: v.Addr(), Port: v.Port(), HostIP: b.cfg.HostIP, HostPort: g.hostPort,
				ContainerID: g.container, IfName: g.ifName})
		}
	}
	return out
}

// OpenListenPorts returns the host ports with a listening TCP socket.
func OpenListenPorts() (map[uint16]bool, error) {
	open, _, err := hostTCPSockets()
	return open, err
}
