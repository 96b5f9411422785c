package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/seccomp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

func (s *session) listen(ctx context.Context, n seccomp.Notif) error {
	start := time.Now()
	fd := int(int32(n.Args[0]))
	backlog := int(int32(n.Args[1]))
	c := s.container()
	if !s.b.cfg.View.FastPath() {
		return s.fallback("listen", n, ReasonDisabled)
	}
	if c == nil || c.NoSlim || !c.VIP4.IsValid() {
		return s.fallback("listen", n, ReasonNotSlim)
	}
	a, r, err := s.fetch(n, fd)
	if err != nil {
		return err
	}
	defer a.close()
	if r != "" {
		return s.fallback("listen", n, r)
	}
	if a.ours {
		// listen() again on our listener only changes its backlog; on a
		// client host socket it would autobind a host port: refuse, as
		// the kernel refuses listen on a connected socket.
		if v, err := unix.GetsockoptInt(a.fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && v == 1 {
			return s.l.Continue(n.ID)
		}
		return s.l.Return(n.ID, 0, unix.EINVAL)
	}
	sa, err := unix.Getsockname(a.fd)
	if err != nil {
		return s.fallback("listen", n, ReasonError)
	}
	bound := addrPortOf(sa)
	v6only := false
	if a.family == unix.AF_INET6 {
		v, _ := unix.GetsockoptInt(a.fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		v6only = v == 1
	}
	vips, reason := listenVIPs(bound, v6only, c, s.b.cfg.View)
	if reason != "" {
		return s.leaveListen(n, a, reason)
	}
	opts := readOpts(a.fd, a.family, true, a.opts)
	if _, bad := opts.refused(s.b.defaults[a.family]); bad {
		// The guard refuses the value on host sockets: the listener
		// stays in the container, with it.
		return s.leaveListen(n, a, ReasonOption)
	}
	b := s.b
	g, done, err := b.groupOrClaim(ctx, vips[0])
	if err != nil {
		return err
	}
	// done ends this call's claim on creating the group (a no-op when it
	// joins one): other listen()s on the address wait for it, then join.
	defer done()
	newGroup := g == nil
	var hostPort uint16
	if newGroup {
		pctx, cancel := context.WithTimeout(ctx, storeCallTimeout)
		hostPort, err = b.cfg.Ports.ListenerPort(pctx)
		cancel()
		if err != nil {
			b.cfg.Metrics.Errors.WithLabelValues("listen", "port").Inc()
			s.log.Warn("broker: no listener port from the store, leaving the listener in the container", "err", err)
			return s.fallback("listen", n, ReasonStore)
		}
	} else {
		hostPort = g.hostPort
	}
	fail := func(step string, r Reason) error {
		b.cfg.Metrics.Errors.WithLabelValues("listen", step).Inc()
		if newGroup {
			b.cfg.Ports.ReleaseListenerPort(hostPort)
		}
		return s.leaveListen(n, a, r)
	}
	hfd, err := s.hostListener(a, opts, hostPort, backlog)
	if errors.Is(err, unix.EADDRINUSE) && !newGroup {
		// The group's host listeners are alive and this socket may not
		// join them (no SO_REUSEPORT on both): what the kernel would have
		// said at bind, had the first socket still been in the container.
		// Had they all closed (a server re-listening on its port, as
		// iperf3 does between tests), the bind would have succeeded and
		// this socket takes the group over.
		return s.l.Return(n.ID, 0, unix.EADDRINUSE)
	}
	if err != nil {
		s.log.Debug("broker: host listener failed", "port", hostPort, "err", err)
		return fail("listen", ReasonError)
	}
	defer unix.Close(hfd)
	if b.cfg.Tagger != nil {
		if err := b.cfg.Tagger.SetSocket(hfd, bound, netip.AddrPort{}); err != nil {
			return fail("tag", ReasonError)
		}
	}
	if newGroup {
		// Publish before installing: a listener nobody can find would
		// leave overlay clients with nothing (the container's own socket
		// is gone once we install).
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		err := s.publish(pctx, c, vips, hostPort)
		cancel()
		if err != nil {
			s.log.Warn("broker: publishing listener failed, leaving it in the container", "vip", vips[0], "err", err)
			return fail("publish", ReasonStore)
		}
	}
	// fetch read the fd's close-on-exec flag already.
	_, err = s.l.AddFD(n.ID, hfd, fd, true, false, a.cloexec)
	if err != nil {
		if newGroup {
			s.withdraw(vips)
		}
		if errors.Is(err, seccomp.ErrGone) {
			if newGroup {
				b.cfg.Ports.ReleaseListenerPort(hostPort)
			}
			return err
		}
		return fail("addfd", ReasonError)
	}
	if !newGroup {
		b.mu.Lock()
		g.created = time.Now() // not reaped before its new socket shows up
		b.mu.Unlock()
	}
	if newGroup {
		b.mu.Lock()
		g = &listenerGroup{hostPort: hostPort, vips: vips, container: c.ID, ifName: c.IfName, created: time.Now()}
		for _, v := range vips {
			b.listeners[v] = g
		}
		b.byPort[hostPort] = g
		b.mu.Unlock()
	}
	b.cfg.Metrics.Swaps.WithLabelValues("listen").Inc()
	err = s.l.Return(n.ID, 0, 0)
	b.cfg.Metrics.Setup.WithLabelValues("listen").Observe(time.Since(start).Seconds())
	return err
}

// groupOrClaim returns the listener group serving v, or, if there is none,
// claims the right to create it: listen()s run concurrently (each in a
// goroutine of its own, as they wait for the store), and two processes
// starting on one port at once (SO_REUSEPORT workers) must end in one
// group on one host port, not two groups publishing over each other. A
// second caller waits until the first has created the group (and joins
// it) or given up (and claims it in turn). done releases the claim; call
// it once the group is registered or abandoned.
func (b *Broker) groupOrClaim(ctx context.Context, v netip.AddrPort) (g *listenerGroup, done func(), err error) {
	b.mu.Lock()
	for {
		if g := b.listeners[v]; g != nil {
			b.mu.Unlock()
			return g, func() {}, nil
		}
		ch, busy := b.creating[v]
		if !busy {
			ch = make(chan struct{})
			b.creating[v] = ch
			b.mu.Unlock()
			return nil, func() {
				b.mu.Lock()
				delete(b.creating, v)
				b.mu.Unlock()
				close(ch)
			}, nil
		}
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		b.mu.Lock()
	}
}

// leaveListen leaves a listen() on the container socket a to the kernel,
// noting it in the socket's record first: a connect() on a listening
// socket must not be swapped (the kernel refuses it; a swap would drop the
// listener).
func (s *session) leaveListen(n seccomp.Notif, a appSocket, r Reason) error {
	if a.recorded && s.b.cfg.Recorder != nil {
		if err := s.b.cfg.Recorder.MarkListened(a.fd); err != nil && s.debug {
			s.log.Debug("broker: marking a listening socket failed", "err", err)
		}
	}
	return s.fallback("listen", n, r)
}

// sockaddrOf builds a sockaddr of family for an IPv4 address: an IPv6
// socket gets the v4-mapped form (the underlay is IPv4).
func sockaddrOf(family int, a netip.Addr, port uint16) unix.Sockaddr {
	if family == unix.AF_INET6 {
		return &unix.SockaddrInet6{Port: int(port), Addr: a.As16()}
	}
	return &unix.SockaddrInet4{Port: int(port), Addr: a.As4()}
}

// hostListener creates the host listener for the application socket a.
func (s *session) hostListener(a appSocket, opts sockOpts, port uint16, backlog int) (int, error) {
	flags := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if a.nonblock {
		flags |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(a.family, flags, unix.IPPROTO_TCP)
	if err != nil {
		return -1, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return -1, err
	}
	if _, err := opts.applyDiff(fd, s.b.defaults[a.family]); err != nil {
		s.log.Debug("broker: some listener options not copied", "err", err)
	}
	if a.family == unix.AF_INET6 {
		// The underlay is IPv4: the host listener takes v4-mapped peers.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	}
	if err := unix.Bind(fd, sockaddrOf(a.family, s.b.cfg.HostIP, port)); err != nil {
		return -1, err
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return -1, err
	}
	ok = true
	return fd, nil
}

func (s *session) publish(ctx context.Context, c *Container, vips []netip.AddrPort, hostPort uint16) error {
	for i, v := range vips {
		l := api.Listener{VIP: v.Addr(), Port: v.Port(), HostIP: s.b.cfg.HostIP, HostPort: hostPort, ContainerID: c.ID, IfName: c.IfName}
		if err := s.b.cfg.Publisher.Publish(ctx, l); err != nil {
			// Publish may fail after writing (its record not seen in
			// time): this one goes too, or it would outlive the
			// fallback and send clients to a port nobody listens on.
			s.withdraw(vips[:i+1])
			return err
		}
	}
	return nil
}

func (s *session) withdraw(vips []netip.AddrPort) {
	s.b.withdraw(vips)
}

func (b *Broker) withdraw(vips []netip.AddrPort) {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	for _, v := range vips {
		if err := b.cfg.Publisher.Withdraw(ctx, v.Addr(), v.Port()); err != nil {
			// A record left behind would send clients to a closed port:
			// the next reap tries again.
			b.cfg.Log.Warn("broker: withdrawing listener failed; trying again", "vip", v, "err", err)
			b.mu.Lock()
			b.unwithdrawn = append(b.unwithdrawn, v)
			b.mu.Unlock()
		}
	}
}

// reapListeners withdraws listeners whose host sockets are all closed (the
// application closed them or exited). One sock_diag dump per family.
func (b *Broker) reapListeners(ctx context.Context) {
	b.mu.Lock()
	retry := b.unwithdrawn
	b.unwithdrawn = nil
	// Withdrawn earlier but failed, and not listened on again since.
	retry = slices.DeleteFunc(retry, func(v netip.AddrPort) bool { return b.listeners[v] != nil })
	idle := len(b.byPort) == 0
	b.mu.Unlock()
	if len(retry) > 0 {
		b.withdraw(retry)
	}
	if idle {
		return
	}
	open, _, err := hostTCPSockets()
	if err != nil {
		b.cfg.Log.Info("broker: sock_diag failed; closed listeners are looked for again at the next tick", "err", err)
		return // unknown: withdraw nothing
	}
	var gone []*listenerGroup
	b.mu.Lock()
	for port, g := range b.byPort {
		if !open[port] && time.Since(g.created) > b.cfg.ReapInterval {
			gone = append(gone, g)
			delete(b.byPort, port)
			for _, v := range g.vips {
				if b.listeners[v] == g {
					delete(b.listeners, v)
				}
			}
		}
	}
	b.mu.Unlock()
	for _, g := range gone {
		b.withdraw(g.vips)
		b.cfg.Ports.ReleaseListenerPort(g.hostPort)
		b.cfg.Log.Debug("broker: listener closed", "vips", g.vips, "hostPort", g.hostPort)
	}
}

// hostTCPSockets dumps the host namespace's TCP sockets (one sock_diag
// dump per family): the ports with a listener, and the 4-tuples of the
// others.
func hostTCPSockets() (open map[uint16]bool, live map[ConnKey]bool, err error) {
	open, live = map[uint16]bool{}, map[ConnKey]bool{}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := DiagTCP(fam)
		if err != nil {
			return nil, nil, err
		}
		for _, sk := range socks {
			if sk.State == netlink.TCP_LISTEN {
				open[sk.ID.SourcePort] = true
				continue
			}
			live[diagKey(sk)] = true
		}
	}
	return open, live, nil
}

// Interrupted sock_diag dumps (sockets came and went during the dump: the
// answer may be inconsistent) are tried again this many times, this far
// apart; a busy host interrupts many.
const (
	diagTries = 8
	diagPause = 5 * time.Millisecond
)

// DiagTCP dumps the TCP sockets of one family in the current network
// namespace, trying again when the dump was interrupted.
func DiagTCP(family uint8) ([]*netlink.Socket, error) {
	for try := 1; ; try++ {
		socks, err := netlink.SocketDiagTCP(family)
		if !errors.Is(err, netlink.ErrDumpInterrupted) || try == diagTries {
			return socks, err
		}
		time.Sleep(diagPause)
	}
}

// diagKey is a sock_diag entry's 4-tuple, v4-mapped addresses unmapped.
func diagKey(sk *netlink.Socket) ConnKey {
	src, _ := netip.AddrFromSlice(sk.ID.Source)
	dst, _ := netip.AddrFromSlice(sk.ID.Destination)
	return ConnKey{
		Local:  netip.AddrPortFrom(src.Unmap(), sk.ID.SourcePort),
		Remote: netip.AddrPortFrom(dst.Unmap(), sk.ID.DestinationPort),
	}
}

// DiagKey exports diagKey for slimd's connection listing.
func DiagKey(sk *netlink.Socket) ConnKey { return diagKey(sk) }

func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch v := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(v.Addr), uint16(v.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(v.Addr).Unmap(), uint16(v.Port))
	}
	return netip.AddrPort{}
}

// DestroyTCP aborts the TCP socket that sock_diag listed as sk, in the
// calling thread's network namespace, as ss -K does (SOCK_DESTROY,
// CONFIG_INET_DIAG_DESTROY): the owner's next call fails with
// ECONNABORTED and the peer gets a reset. The socket's cookie goes with
// the 4-tuple: without it the kernel falls back to a listener on the
// local address when the connection is gone already, and would abort
// that. netlink's own SocketDestroy speaks AF_INET only and sends no
// cookie.
func DestroyTCP(sk *netlink.Socket) error {
	k := diagKey(sk)
	req := nl.NewNetlinkRequest(nl.SOCK_DESTROY, unix.NLM_F_ACK)
	req.AddData(&diagReq{family: sk.Family, local: k.Local, remote: k.Remote, cookie: sk.ID.Cookie})
	_, err := req.Execute(unix.NETLINK_INET_DIAG, 0)
	return err
}

// diagReq is struct inet_diag_req_v2 (linux/inet_diag.h), for one
// socket in any state.
type diagReq struct {
	family        uint8
	local, remote netip.AddrPort
	cookie        [2]uint32
}

func (r *diagReq) Len() int { return 56 }

func (r *diagReq) Serialize() []byte {
	b := make([]byte, 56)
	b[0], b[1] = r.family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:], ^uint32(0)) // every state
	binary.BigEndian.PutUint16(b[8:], r.local.Port())
	binary.BigEndian.PutUint16(b[10:], r.remote.Port())
	addr := func(a netip.Addr) []byte {
		if r.family == unix.AF_INET6 {
			s := a.As16()
			return s[:]
		}
		s := a.Unmap().As4()
		return s[:]
	}
	copy(b[12:28], addr(r.local.Addr()))
	copy(b[28:44], addr(r.remote.Addr()))
	binary.NativeEndian.PutUint32(b[48:], r.cookie[0])
	binary.NativeEndian.PutUint32(b[52:], r.cookie[1])
	return b
}
