package broker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/seccomp"
	"golang.org/x/sys/unix"
)

// maxPortTries bounds the search for a free 4-tuple: each try is one
// bind+connect; past this many busy ports the block is considered full.
const maxPortTries = 64

// appSocket is the application's socket, duplicated into slimd.
type appSocket struct {
	fd       int // our copy
	family   int
	nonblock bool
	cloexec  bool // the target's fd has close-on-exec
	ours     bool // a host socket slimd installed earlier
	// opts has bpf.OptBit set for the options the application may have
	// set: all of them unless the recorders saw every setsockopt.
	opts uint64
}

// timer records handler steps.
type timer struct {
	m    *Metrics
	last time.Time
}

func (t *timer) step(name string) {
	now := time.Now()
	t.m.step(name).Observe(now.Sub(t.last).Seconds())
	t.last = now
}

// fetch duplicates the target's socket fd and reads what the decisions
// need. eligible is false (with a reason) for sockets that are not TCP or
// belong to another namespace.
//
// Its ID_VALID check also vouches for whatever the handler read from the
// target before (the sockaddr): the notification still pending means the
// thread was blocked in the call, with its tid not reused, all along.
func (s *session) fetch(n seccomp.Notif, fd int) (appSocket, Reason, error) {
	cfd, err := s.getFD(int(n.PID), fd)
	if err != nil {
		if errors.Is(err, seccomp.ErrGone) {
			return appSocket{}, ReasonError, fmt.Errorf("pidfd: %w", err)
		}
		// EBADF: not an fd of the process; the kernel will say so.
		return appSocket{}, ReasonNotTCP, nil
	}
	a := appSocket{fd: cfd}
	if err := s.l.IDValid(n.ID); err != nil {
		a.close()
		return appSocket{}, "", err
	}
	var proto int
	var cookie uint64
	if rec, ok := s.b.appRecord(cfd); ok {
		// One map lookup instead of three getsockopts here and one
		// per copied option later.
		proto, a.family, cookie, a.opts = rec.Protocol, rec.Family, rec.NetnsCookie, rec.Opts
	} else {
		// IPPROTO_TCP implies SOCK_STREAM (MPTCP has its own protocol
		// number), so the type needs no read of its own.
		var err1, err2 error
		proto, err1 = unix.GetsockoptInt(cfd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
		a.family, _ = unix.GetsockoptInt(cfd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err1 == nil {
			cookie, err2 = unix.GetsockoptUint64(cfd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		}
		if err2 != nil {
			a.close()
			return appSocket{}, ReasonError, fmt.Errorf("netns cookie: %w", err2)
		}
		a.opts = allOpts
	}
	if proto != unix.IPPROTO_TCP || (a.family != unix.AF_INET && a.family != unix.AF_INET6) {
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
	fl, err := seccomp.FDFlags(int(n.PID), fd)
	if err != nil {
		a.close()
		return appSocket{}, ReasonError, err
	}
	a.nonblock, a.cloexec = fl&unix.O_NONBLOCK != 0, fl&unix.O_CLOEXEC != 0
	return a, "", nil
}

// appRecord returns the recorders' record of socket fd, counting which way
// its options are read.
func (b *Broker) appRecord(fd int) (bpf.AppSocket, bool) {
	if b.cfg.Recorder == nil {
		b.cfg.Metrics.OptionReads.WithLabelValues("all").Inc()
		return bpf.AppSocket{}, false
	}
	rec, ok, err := b.cfg.Recorder.AppSocket(fd)
	if err != nil || !ok {
		b.cfg.Metrics.OptionReads.WithLabelValues("all").Inc()
		return bpf.AppSocket{}, false
	}
	b.cfg.Metrics.OptionReads.WithLabelValues("recorded").Inc()
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

func (s *session) fallback(op string, n seccomp.Notif, r Reason) error {
	s.b.cfg.Metrics.Fallbacks.WithLabelValues(op, string(r)).Inc()
	s.log.Debug("broker: left to the kernel", "op", op, "reason", r, "tid", n.PID)
	return s.l.Continue(n.ID)
}

func (s *session) connect(ctx context.Context, n seccomp.Notif, resumed bool) error {
	start := time.Now()
	tm := timer{m: s.b.cfg.Metrics, last: start}
	fd := int(int32(n.Args[0]))
	addrLen := int(uint32(n.Args[2]))
	if addrLen < 2 || addrLen > 128 {
		return s.fallback("connect", n, ReasonNotInet)
	}
	// Not validated here: only fetch's ID_VALID lets the handler act
	// on it (see fetch); falling back to the kernel is safe regardless.
	raw, err := seccomp.ReadMem(int(n.PID), n.Args[1], min(addrLen, sockaddrMax))
	if err != nil {
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
	}
	if perr != nil {
		// A disconnect (AF_UNSPEC) on one of our host sockets must not
		// reach the kernel: it would free the socket for a connect
		// anywhere from the host namespace (the BPF guard does not see
		// disconnects). Checking costs a pidfd_getfd, paid only here.
		if len(raw) >= 2 && raw[0] == 0 && raw[1] == 0 {
			a, r, err := s.fetch(n, fd)
			if err != nil {
				return err
			}
			defer a.close()
			if r == "" && a.ours {
				return s.reconnect(n, a, dst, false, resumed)
			}
		}
		return s.fallback("connect", n, ReasonNotInet)
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
	if a.ours {
		return s.reconnect(n, a, dst, true, resumed)
	}
	if _, err := unix.Getpeername(a.fd); err == nil {
		// Already connected in the container: the kernel says EISCONN.
		return s.fallback("connect", n, ReasonNoListener)
	}
	opts := readOpts(a.fd, a.family, false, a.opts)
	tm.step("read_options")
	// A connection to an IPv6 virtual address comes from an IPv6 port
	// block: the server sees the client's IPv6 address.
	v6 := dst.Addr().Is6() && !dst.Addr().Is4In6() && c.VIP6.IsValid()
	hfd, local, err := s.dial(ctx, c, a.family, v6, opts, lst)
	tm.step("host_connect")
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) && (errno == unix.ECONNREFUSED || errno == unix.ENETUNREACH || errno == unix.EHOSTUNREACH) {
			// The peer said no right away: tell the application what
			// the overlay would have told it.
			s.b.cfg.Metrics.Errors.WithLabelValues("connect", "refused").Inc()
			return s.l.Return(n.ID, 0, errno)
		}
		s.b.cfg.Metrics.Errors.WithLabelValues("connect", "dial").Inc()
		s.log.Debug("broker: host connect failed, using the overlay", "dst", dst, "err", err)
		return s.fallback("connect", n, ReasonError)
	}
	defer unix.Close(hfd)
	if !a.nonblock {
		if err := makeBlocking(hfd); err != nil {
			return s.fallback("connect", n, ReasonError)
		}
	}
	vlocal := netip.AddrPortFrom(c.VIP4, local.Port())
	if v6 {
		vlocal = netip.AddrPortFrom(c.VIP6, local.Port())
	}
	if dst.Addr().IsLoopback() {
		vlocal = netip.AddrPortFrom(dst.Addr(), local.Port())
	}
	if s.b.cfg.Tagger != nil {
		if err := s.b.cfg.Tagger.SetSocket(hfd, vlocal, dst); err != nil {
			s.b.cfg.Metrics.Errors.WithLabelValues("connect", "tag").Inc()
			return s.fallback("connect", n, ReasonError)
		}
	}
	tm.step("tag")
	if _, err := s.l.AddFD(n.ID, hfd, fd, true, false, a.cloexec); err != nil {
		if errors.Is(err, seccomp.ErrGone) {
			return err
		}
		s.b.cfg.Metrics.Errors.WithLabelValues("connect", "addfd").Inc()
		return s.fallback("connect", n, ReasonError)
	}
	tm.step("addfd")
	s.b.cfg.Metrics.Swaps.WithLabelValues("connect").Inc()
	s.b.mu.Lock()
	s.b.conns[ConnKey{Local: local, Remote: netip.AddrPortFrom(lst.HostIP, lst.HostPort)}] = start
	s.b.mu.Unlock()
	if a.nonblock {
		err = s.l.Return(n.ID, 0, unix.EINPROGRESS)
	} else {
		// The kernel re-runs connect on the installed, connecting host
		// socket and waits for it natively (SS_CONNECTING), in the
		// application's thread.
		err = s.l.Continue(n.ID)
	}
	tm.step("answer")
	s.b.cfg.Metrics.Setup.WithLabelValues("connect").Observe(time.Since(start).Seconds())
	return err
}

// reconnect answers connect() on a host socket slimd installed earlier: a
// restarted call after a signal, an application connecting twice, or
// (resumed) the very call a predecessor swapped but died before answering.
func (s *session) reconnect(n seccomp.Notif, a appSocket, dst netip.AddrPort, inet, resumed bool) error {
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
	}
	return s.l.Return(n.ID, 0, unix.EISCONN)
}

// dial creates the host socket for c, bound to a port of c's blocks, and
// starts connecting it to the listener. The socket is non-blocking.
//
// ipv6 picks the container's IPv6 port blocks: their ports map back to its
// IPv6 address on the server's side.
func (s *session) dial(ctx context.Context, c *Container, family int, ipv6 bool, opts sockOpts, lst api.Listener) (int, netip.AddrPort, error) {
	target := sockaddrOf(family, lst.HostIP, lst.HostPort)
	grown := false
	for try := 0; try < maxPortTries; try++ {
		port, ok := s.b.nextPort(c, ipv6)
		if !ok {
			if grown {
				break
			}
			if err := s.b.cfg.Ports.Grow(ctx, c, ipv6); err != nil {
				return -1, netip.AddrPort{}, fmt.Errorf("grow port blocks: %w", err)
			}
			grown = true
			continue
		}
		fd, err := s.b.pool.get(family)
		if err != nil {
			return -1, netip.AddrPort{}, err
		}
		if _, err := opts.applyDiff(fd, s.b.defaults[family]); err != nil {
			s.log.Debug("broker: some socket options not copied", "err", err)
		}
		if err := unix.Bind(fd, sockaddrOf(family, s.b.cfg.HostIP, port)); err != nil {
			unix.Close(fd)
			if err == unix.EADDRINUSE {
				continue
			}
			return -1, netip.AddrPort{}, fmt.Errorf("bind port %d: %w", port, err)
		}
		err = unix.Connect(fd, target)
		switch err {
		case nil, unix.EINPROGRESS:
			return fd, netip.AddrPortFrom(s.b.cfg.HostIP, port), nil
		case unix.EADDRNOTAVAIL, unix.EADDRINUSE:
			unix.Close(fd) // this 4-tuple is taken: next port
			continue
		default:
			unix.Close(fd)
			return -1, netip.AddrPort{}, err
		}
	}
	return -1, netip.AddrPort{}, fmt.Errorf("no free source port for %s after %d tries", c.ID, maxPortTries)
}

// maxCursors bounds the per-container port cursors kept.
const maxCursors = 4096

// nextPort returns the next source port of c's blocks, round robin, so
// consecutive connections to one listener use different 4-tuples.
func (b *Broker) nextPort(c *Container, ipv6 bool) (uint16, bool) {
	blocks := b.cfg.Ports.Blocks(c)
	total := 0
	for _, bl := range blocks {
		if bl.IPv6 == ipv6 {
			total += int(bl.Size)
		}
	}
	if total == 0 {
		return 0, false
	}
	key := c.ID
	if ipv6 {
		key += "/6"
	}
	b.mu.Lock()
	if _, ok := b.cursors[key]; !ok && len(b.cursors) >= maxCursors {
		// Containers come and go and nothing tells the broker: forget
		// them all now and then. A cursor only spreads ports; starting
		// over at a block's first port is harmless.
		clear(b.cursors)
	}
	i := b.cursors[key] % total
	b.cursors[key] = i + 1
	b.mu.Unlock()
	for _, bl := range blocks {
		if bl.IPv6 != ipv6 {
			continue
		}
		if i < int(bl.Size) {
			return bl.Start + uint16(i), true
		}
		i -= int(bl.Size)
	}
	return 0, false
}

// sockaddrOf builds a sockaddr of family for an IPv4 address: an IPv6
// socket gets the v4-mapped form (the underlay is IPv4).
func sockaddrOf(family int, a netip.Addr, port uint16) unix.Sockaddr {
	if family == unix.AF_INET6 {
		return &unix.SockaddrInet6{Port: int(port), Addr: a.As16()}
	}
	return &unix.SockaddrInet4{Port: int(port), Addr: a.As4()}
}

// makeBlocking clears O_NONBLOCK on a host socket slimd made, with one
// fcntl: it carries no other status flag that F_SETFL could change, so
// there is nothing to read first.
func makeBlocking(fd int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, 0)
	return err
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
