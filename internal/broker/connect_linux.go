package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/seccomp"
	"golang.org/x/sys/unix"
)

// storeCallTimeout bounds a store call made while an application thread
// waits in a trapped system call (claiming a port block): past it the call
// goes to the overlay rather than hang the application.
const storeCallTimeout = 3 * time.Second

// appSocket is the application's socket, duplicated into slimd.
type appSocket struct {
	fd       int // our copy
	family   int
	protocol int  // IPPROTO_TCP or IPPROTO_MPTCP
	nonblock bool // O_NONBLOCK, shared by the copy
	cloexec  bool // the target's fd has close-on-exec
	ours     bool // a host socket slimd installed earlier
	// recorded: the recorders' record was trusted; connected and listened
	// come from it. Without one they are unknown (false) and the connect
	// path asks the socket.
	recorded  bool
	connected bool
	listened  bool
	// opts has bpf.OptBit set for the options the application may have
	// set: all of them unless the recorders saw every setsockopt.
	opts uint64
}

// stepSample: one connect in this many records its per-step times (the
// clock reads and histogram updates are not free on the hot path).
const stepSample = 64

// timer records handler steps of sampled calls.
type timer struct {
	m    *Metrics
	on   bool
	last time.Time
}

func (t *timer) step(name string) {
	if !t.on {
		return
	}
	now := time.Now()
	t.m.step(name).Observe(now.Sub(t.last).Seconds())
	t.last = now
}

// fetch duplicates the target's socket fd and reads what the decisions
// need. eligible is false (with a reason) for sockets that are not TCP (or
// MPTCP) or belong to another namespace.
//
// Whatever the handler read from the target before (the sockaddr) and the
// copy itself are vouched for by the answer that follows: ADDFD and SEND
// fail once the notification is gone, and while it is pending the thread
// is blocked in the call, its tid not reused. A handler that answers from
// what it read without ADDFD or CONTINUE checks validity itself.
func (s *session) fetch(n seccomp.Notif, fd int) (appSocket, Reason, error) {
	cfd, err := s.getFD(int(n.PID), fd)
	if err != nil {
		switch {
		case errors.Is(err, seccomp.ErrGone):
			return appSocket{}, ReasonError, fmt.Errorf("pidfd: %w", err)
		case errors.Is(err, unix.EBADF):
			// Not an fd of the process: the kernel will say so.
			return appSocket{}, ReasonNotTCP, nil
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			// No CAP_SYS_PTRACE over the target (a user namespace, an
			// LSM): nothing can be swapped in this container.
			return appSocket{}, ReasonPermission, nil
		default:
			// pidfd_open or pidfd_getfd missing (ENOSYS, EINVAL on
			// kernels without PIDFD_THREAD).
			return appSocket{}, ReasonUnsupported, nil
		}
	}
	a := appSocket{fd: cfd}
	var cookie uint64
	if rec, ok := s.b.appRecord(cfd); ok {
		// One map lookup instead of three getsockopts here and one
		// per copied option later.
		a.protocol, a.family, cookie, a.opts = rec.Protocol, rec.Family, rec.NetnsCookie, rec.Opts
		a.recorded, a.connected, a.listened = true, rec.Connected, rec.Listened
	} else {
		var err1, err2 error
		a.protocol, err1 = unix.GetsockoptInt(cfd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
		a.family, _ = unix.GetsockoptInt(cfd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err1 == nil && isStream(a.protocol) {
			cookie, err2 = unix.GetsockoptUint64(cfd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		}
		if err2 != nil {
			a.close()
			return appSocket{}, ReasonError, fmt.Errorf("netns cookie: %w", err2)
		}
		a.opts = allOpts
	}
	// IPPROTO_TCP and IPPROTO_MPTCP imply SOCK_STREAM, so the type needs
	// no read of its own.
	if !isStream(a.protocol) || (a.family != unix.AF_INET && a.family != unix.AF_INET6) {
		a.close()
		return appSocket{}, ReasonNotTCP, nil
	}
	switch cookie {
	case s.cookie:
	case s.b.hostCookie:
		a.ours = true
	default:
		a.close()
		return appSocket{}, ReasonForeignNetns, nil
	}
	fl, err := s.fdinfo.Flags(int(n.PID), fd)
	if err != nil {
		a.close()
		return appSocket{}, ReasonError, err
	}
	a.nonblock, a.cloexec = fl&unix.O_NONBLOCK != 0, fl&unix.O_CLOEXEC != 0
	return a, "", nil
}

// isStream reports whether protocol is one the fast path swaps: TCP, and
// MPTCP, which Go (1.24 and later) listens with by default. A container
// has one path to its peers, so MPTCP gains nothing there; its socket is
// swapped for a plain TCP host socket.
func isStream(protocol int) bool {
	return protocol == unix.IPPROTO_TCP || protocol == unix.IPPROTO_MPTCP
}

// appRecord returns the recorders' record of socket fd, counting which way
// its options are read.
func (b *Broker) appRecord(fd int) (bpf.AppSocket, bool) {
	if b.cfg.Recorder == nil {
		b.cfg.Metrics.readsAll.Inc()
		return bpf.AppSocket{}, false
	}
	rec, ok, err := b.cfg.Recorder.AppSocket(fd)
	if err != nil || !ok {
		b.cfg.Metrics.readsAll.Inc()
		return bpf.AppSocket{}, false
	}
	b.cfg.Metrics.readsRecorded.Inc()
	return rec, true
}

// maxPidFDs bounds the session's cache of thread pidfds.
const maxPidFDs = 256

// getFD copies the target thread's fd (pidfd_getfd) through a cached
// pidfd of the thread: threads connect many times, and each pidfd_open and
// close is a system call on the connect path. A cached pidfd of a thread
// that has exited fails with ESRCH, also if its tid was reused: it is
// replaced and the copy tried once more.
func (s *session) getFD(tid, fd int) (int, error) {
	for try := 0; ; try++ {
		s.pidMu.Lock()
		pidfd, ok := s.pidfds[tid]
		s.pidMu.Unlock()
		if !ok {
			var err error
			if pidfd, err = seccomp.PidFD(tid); err != nil {
				return -1, err
			}
			s.pidMu.Lock()
			if len(s.pidfds) >= maxPidFDs {
				s.closePidFDsLocked()
			}
			if old, ok := s.pidfds[tid]; ok {
				unix.Close(pidfd) // another worker was faster
				pidfd = old
			} else {
				s.pidfds[tid] = pidfd
			}
			s.pidMu.Unlock()
		}
		cfd, err := seccomp.GetFD(pidfd, fd)
		if err == nil || try > 0 || !errors.Is(err, seccomp.ErrGone) || !ok {
			return cfd, err
		}
		s.pidMu.Lock()
		if s.pidfds[tid] == pidfd {
			delete(s.pidfds, tid)
			unix.Close(pidfd)
		}
		s.pidMu.Unlock()
	}
}

// closePidFDsLocked empties the pidfd cache; pidMu is held.
func (s *session) closePidFDsLocked() {
	for tid, pidfd := range s.pidfds {
		unix.Close(pidfd)
		delete(s.pidfds, tid)
	}
}

func (a appSocket) close() {
	if a.fd > 0 {
		unix.Close(a.fd)
	}
}

// allowed applies network policy to a TCP connect from container c to
// dst that would take the fast path. Loopback stays
// inside the container and policies do not see it; containers that are
// not Slim's have no address policies could name.
func (s *session) allowed(c *Container, dst netip.AddrPort) bool {
	p := s.b.cfg.Policy
	if p == nil || c == nil || !c.VIP4.IsValid() || dst.Addr().Unmap().IsLoopback() {
		return true
	}
	src := c.VIP4
	if dst.Addr().Is6() && !dst.Addr().Is4In6() && c.VIP6.IsValid() {
		src = c.VIP6
	}
	return p.AllowTCP(src, netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()))
}

func (s *session) fallback(op string, n seccomp.Notif, r Reason) error {
	s.b.cfg.Metrics.fallback(op, r).Inc()
	if s.debug {
		s.log.Debug("broker: left to the kernel", "op", op, "reason", r, "tid", n.PID)
	}
	return s.l.Continue(n.ID)
}

// connect swaps the application's socket for a host socket slimd made and
// armed (a permit in the BPF map slim_conns), then lets the kernel run the
// application's connect() on it, in the application's thread: the connect
// program on slimd's cgroup checks the destination against the permit,
// binds a free port of the container's blocks and sends the connection to
// the listener's host address. slimd makes no bind or connect itself; the
// errno, EINPROGRESS, SO_SNDTIMEO and signals are the kernel's own.
func (s *session) connect(ctx context.Context, n seccomp.Notif, resumed bool) error {
	m := s.b.cfg.Metrics
	start := time.Now()
	s.connects++
	tm := timer{m: m, on: s.connects%stepSample == 0, last: start}
	fd := int(int32(n.Args[0]))
	addrLen := int(uint32(n.Args[2]))
	if addrLen < 2 || addrLen > 128 {
		return s.fallback("connect", n, ReasonNotInet)
	}
	raw := s.sabuf[:min(addrLen, sockaddrMax)]
	if err := seccomp.ReadMemInto(int(n.PID), n.Args[1], raw); err != nil {
		if errors.Is(err, seccomp.ErrGone) {
			return err
		}
		return s.fallback("connect", n, ReasonNotInet)
	}
	tm.step("read_sockaddr")
	dst, perr := parseSockaddr(raw)
	c := s.container()
	var lst api.Listener
	var reason Reason
	if perr == nil {
		lst, reason = routeConnect(dst, c, s.b.cfg.View)
		if reason == "" && s.b.cfg.Permits == nil {
			reason = ReasonDisabled
		}
	}
	if perr != nil {
		// A disconnect (AF_UNSPEC) on one of our host sockets must not
		// reach the kernel: it would free the socket for a connect
		// anywhere from the host namespace (the BPF guard does not see
		// disconnects, though the socket's sticky permit state refuses
		// any later connect). Checking costs a pidfd_getfd, paid only
		// here.
		if len(raw) >= 2 && raw[0] == 0 && raw[1] == 0 {
			a, r, err := s.fetch(n, fd)
			if err != nil {
				return err
			}
			defer a.close()
			if r == "" && a.ours {
				return s.reconnect(n, a, false, resumed)
			}
		}
		return s.fallback("connect", n, ReasonNotInet)
	}
	if reason == ReasonNoListener {
		if sv, ok := s.b.cfg.View.(ServiceView); ok && sv.IsService(dst.Addr(), dst.Port()) {
			s.b.cfg.Metrics.fallback("connect", ReasonNoBackend).Inc()
			return s.l.Return(n.ID, 0, unix.ECONNREFUSED)
		}
	}
	if reason != "" {
		// Safe on our host sockets too: the kernel answers EISCONN or
		// EALREADY, and the guard refuses a connect on a fresh one.
		return s.fallback("connect", n, reason)
	}
	a, r, err := s.fetch(n, fd)
	if err != nil {
		return err
	}
	defer a.close()
	tm.step("fetch_socket")
	if r != "" {
		return s.fallback("connect", n, r)
	}
	// A TCP connect bound for the fast path: policy decides here, and a
	// denied one fails at once. Connects left to the kernel (UDP, no
	// published listener) meet the policy chain of the packet filters.
	// Through a service, the policies judge the backend it goes to.
	pdst := dst
	if backend := netip.AddrPortFrom(lst.VIP, lst.Port); backend.Addr() != c.own(dst.Addr()) || backend.Port() != dst.Port() {
		pdst = backend
	}
	if !s.allowed(c, pdst) {
		return s.l.Return(n.ID, 0, unix.ECONNREFUSED)
	}
	if a.ours {
		return s.reconnect(n, a, true, resumed)
	}
	if int(binary.LittleEndian.Uint16(raw)) != a.family {
		// An address of the other family: the kernel refuses it.
		return s.fallback("connect", n, ReasonNotInet)
	}
	if !a.recorded || a.protocol == unix.IPPROTO_MPTCP {
		// No record says what the socket went through (MPTCP's connect
		// runs on its subflow, which the recorders do not see): ask it.
		// Connecting counts, not only connected.
		if info, err := unix.GetsockoptTCPInfo(a.fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			a.connected = info.State != unix.BPF_TCP_CLOSE
		} else if _, err := unix.Getpeername(a.fd); err == nil {
			a.connected = true
		} else if v, err := unix.GetsockoptInt(a.fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && v == 1 {
			a.listened = true
		}
	}
	if a.connected || a.listened {
		// Connected (or connecting) over the overlay, or listening: the
		// kernel answers EISCONN, EALREADY or the like; a swap would drop
		// what the socket has.
		return s.fallback("connect", n, ReasonInUse)
	}
	// A connection to an IPv6 virtual address comes from an IPv6 port
	// block: the server sees the client's IPv6 address.
	v6 := dst.Addr().Is6() && c.VIP6.IsValid()
	conn := bpf.Conn{Peer: dst, Want: dst, Dst: netip.AddrPortFrom(lst.HostIP, lst.HostPort), Src: s.b.cfg.HostIP}
	if r := s.b.pickBlocks(ctx, c, v6, &conn); r != "" {
		return s.fallback("connect", n, r)
	}
	tm.step("blocks")
	switch {
	case dst.Addr().IsLoopback():
		conn.Local = dst.Addr()
	case v6:
		conn.Local = c.VIP6
	default:
		conn.Local = c.VIP4
	}
	hfd, err := s.b.pool.get(a.family, a.nonblock)
	if err != nil {
		m.Errors.WithLabelValues("connect", "socket").Inc()
		return s.fallback("connect", n, ReasonError)
	}
	defer unix.Close(hfd)
	if a.opts != 0 {
		opts, defaults := readOpts(a.fd, a.family, false, a.opts), s.b.defaults[a.family]
		if opt, bad := opts.refused(defaults); bad {
			// The guard refuses the value on host sockets (IP_TOS EF, say):
			// the container keeps it, over the overlay.
			if s.debug {
				s.log.Debug("broker: option the guard refuses, using the overlay", "option", opt)
			}
			return s.fallback("connect", n, ReasonOption)
		}
		if _, err := opts.applyDiff(hfd, defaults); err != nil && s.debug {
			s.log.Debug("broker: some socket options not copied", "err", err)
		}
		tm.step("options")
	}
	if err := s.b.cfg.Permits.EnsureListener(lst.HostIP, lst.HostPort, netip.AddrPortFrom(lst.VIP, lst.Port)); err != nil {
		m.Errors.WithLabelValues("connect", "listener_map").Inc()
		return s.fallback("connect", n, ReasonError)
	}
	if err := s.b.cfg.Permits.ArmConn(hfd, conn); err != nil {
		m.Errors.WithLabelValues("connect", "arm").Inc()
		return s.fallback("connect", n, ReasonError)
	}
	tm.step("arm")
	if _, err := s.l.AddFD(n.ID, hfd, fd, true, false, a.cloexec); err != nil {
		if errors.Is(err, seccomp.ErrGone) {
			return err
		}
		m.Errors.WithLabelValues("connect", "addfd").Inc()
		return s.fallback("connect", n, ReasonError)
	}
	tm.step("addfd")
	// The handler's time ends where the answer leaves: with
	// SYNC_WAKE_UP the application's thread runs on this CPU from the
	// SEND on, so the ioctl returns when it yields, which says nothing
	// about slimd.
	m.setupConnect.Observe(time.Since(start).Seconds())
	// The kernel re-runs connect on the installed host socket, in the
	// application's thread: the permit's program takes it from there.
	err = s.l.Continue(n.ID)
	tm.step("answer")
	m.swapsConnect.Inc()
	s.b.pool.refill(a.family, a.nonblock) // after the answer: off the critical path
	return err
}

// reconnect answers connect() on a host socket slimd installed earlier: a
// restarted call after a signal, an application connecting twice, or
// (resumed) the very call a predecessor armed but died before answering.
func (s *session) reconnect(n seccomp.Notif, a appSocket, inet, resumed bool) error {
	if !inet {
		// Disconnecting would free a host socket for reuse: refuse.
		return s.l.Return(n.ID, 0, unix.EOPNOTSUPP)
	}
	info, err := unix.GetsockoptTCPInfo(a.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return s.l.Return(n.ID, 0, unix.EISCONN)
	}
	switch info.State {
	case unix.BPF_TCP_SYN_SENT, unix.BPF_TCP_SYN_RECV:
		if a.nonblock {
			if resumed {
				return s.l.Return(n.ID, 0, unix.EINPROGRESS) // what the first answer would have been
			}
			return s.l.Return(n.ID, 0, unix.EALREADY)
		}
		return s.l.Continue(n.ID) // waits natively, no address is used
	case unix.BPF_TCP_ESTABLISHED:
		// The restarted call of a connect we completed: success.
		return s.l.Return(n.ID, 0, 0)
	case unix.BPF_TCP_CLOSE:
		// Armed and not yet connected: a predecessor installed it and
		// died before answering, or another thread reached the fd
		// first. The permit's program lets one connect through, to the
		// approved destination only.
		if p := s.b.cfg.Permits; p != nil {
			if st, err := p.ConnState(a.fd); err == nil && st == bpf.ConnArmed {
				return s.l.Continue(n.ID)
			}
		}
	}
	return s.l.Return(n.ID, 0, unix.EISCONN)
}

// guardOnly answers bind and MSG_FASTOPEN sends: the kernel runs them on
// container sockets; on host sockets they are refused (a bind would move
// the host socket, a fast-open send would connect it anywhere).
func (s *session) guardOnly(n seccomp.Notif) error {
	a, r, err := s.fetch(n, int(int32(n.Args[0])))
	if err != nil {
		return err
	}
	defer a.close()
	if r == "" && a.ours {
		if n.Syscall() == seccomp.SysBind {
			return s.l.Return(n.ID, 0, unix.EINVAL) // already bound, as the kernel says
		}
		if _, err := unix.Getpeername(a.fd); err == nil {
			return s.l.Continue(n.ID) // a send on a connected socket ignores MSG_FASTOPEN
		}
		return s.l.Return(n.ID, 0, unix.EPERM)
	}
	return s.l.Continue(n.ID)
}
