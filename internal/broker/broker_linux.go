package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
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
	Tagger    Tagger // nil: no address rewriting
	Log       *slog.Logger
	Metrics   *Metrics
	// Workers is how many notifications of one supervised process tree
	// are handled at once (default 4). Handlers never wait for the
	// network, so a slow peer does not hold one.
	Workers int
	// ReapInterval is how often closed listeners are looked for.
	ReapInterval time.Duration
}

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
	cursors   map[string]int                    // container id -> next source port index
	conns     map[ConnKey]time.Time             // swapped client sockets: when
	wg        sync.WaitGroup
}

// listenerGroup is one host listener port and the virtual addresses it
// serves; several host sockets share it through SO_REUSEPORT.
type listenerGroup struct {
	hostPort  uint16
	vips      []netip.AddrPort
	container string
	reuseport bool
	created   time.Time
}

// New prepares a broker in the current (host) network namespace.
func New(cfg Config) (*Broker, error) {
	if !cfg.HostIP.Is4() {
		return nil, fmt.Errorf("broker: host ip %v: want IPv4", cfg.HostIP)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.ReapInterval <= 0 {
		cfg.ReapInterval = 2 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	b := &Broker{
		cfg:       cfg,
		defaults:  map[int]sockOpts{},
		sessions:  map[*session]struct{}{},
		listeners: map[netip.AddrPort]*listenerGroup{},
		byPort:    map[uint16]*listenerGroup{},
		cursors:   map[string]int{},
		conns:     map[ConnKey]time.Time{},
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		if err != nil {
			return nil, fmt.Errorf("broker: probe socket: %w", err)
		}
		b.defaults[fam] = readOpts(fd, fam)
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

// Since returns when the broker swapped in the client socket with this
// 4-tuple (zero if it did not, or does not remember).
func (b *Broker) Since(k ConnKey) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conns[k]
}

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
	s := &session{b: b, l: seccomp.NewListener(fd), pid: pid, log: b.cfg.Log.With("pid", pid)}
	b.mu.Lock()
	b.sessions[s] = struct{}{}
	b.mu.Unlock()
	b.cfg.Metrics.Sessions.Inc()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		s.run(ctx)
		b.mu.Lock()
		delete(b.sessions, s)
		b.mu.Unlock()
		b.cfg.Metrics.Sessions.Dec()
	}()
	return nil
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
			return nil
		case <-t.C:
			b.reapListeners(ctx)
		}
	}
}

// session supervises one notification fd.
type session struct {
	b   *Broker
	l   *seccomp.Listener
	pid int
	log *slog.Logger

	idMu     sync.Mutex
	netnsIno uint64 // 0 until identify
	cookie   uint64
}

func (s *session) run(ctx context.Context) {
	defer s.l.Close()
	var wg sync.WaitGroup
	for range s.b.cfg.Workers {
		wg.Go(func() {
			for {
				n, err := s.l.Receive(ctx)
				if err != nil {
					if !errors.Is(err, seccomp.ErrNoTargets) && ctx.Err() == nil && !errors.Is(err, seccomp.ErrClosed) {
						s.log.Warn("broker: receive failed", "err", err)
					}
					return
				}
				s.handle(ctx, n)
			}
		})
	}
	wg.Wait()
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

func (s *session) handle(ctx context.Context, n seccomp.Notif) {
	if err := s.identify(n.PID); err != nil {
		// The thread is gone or its namespace unreadable: let the
		// kernel answer it.
		_ = s.l.Continue(n.ID)
		return
	}
	var err error
	switch n.Syscall() {
	case seccomp.SysConnect:
		err = s.connect(ctx, n)
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
