package broker

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/slimnet/slim/internal/bpf"
	"golang.org/x/sys/unix"
)

// optKind says how an option's value is read and written.
type optKind uint8

const (
	kindInt optKind = iota
	kindLinger
	kindTimeval
	kindString
	kindBuf // SO_RCVBUF/SO_SNDBUF: the kernel doubles what is set
)

type optSpec struct {
	level, name int
	kind        optKind
	v6          bool // only on AF_INET6 sockets
	v4          bool // only on AF_INET sockets
	listenOnly  bool // means nothing on a connecting socket: not read for connect
}

// copiedOpts are the options that change how a connection behaves and
// that an application may have set before connect() or listen(). The host
// socket gets those that differ from a fresh socket's defaults: copying
// only differences keeps the cost down and, for the buffer sizes, keeps
// autotuning on (setting SO_RCVBUF at all turns it off).
var copiedOpts = []optSpec{
	{level: unix.SOL_SOCKET, name: unix.SO_KEEPALIVE},
	{level: unix.SOL_SOCKET, name: unix.SO_RCVBUF, kind: kindBuf},
	{level: unix.SOL_SOCKET, name: unix.SO_SNDBUF, kind: kindBuf},
	{level: unix.SOL_SOCKET, name: unix.SO_LINGER, kind: kindLinger},
	{level: unix.SOL_SOCKET, name: unix.SO_RCVTIMEO, kind: kindTimeval},
	{level: unix.SOL_SOCKET, name: unix.SO_SNDTIMEO, kind: kindTimeval},
	{level: unix.SOL_SOCKET, name: unix.SO_OOBINLINE},
	{level: unix.SOL_SOCKET, name: unix.SO_RCVLOWAT},
	{level: unix.SOL_SOCKET, name: unix.SO_REUSEPORT, listenOnly: true},
	{level: unix.IPPROTO_TCP, name: unix.TCP_NODELAY},
	{level: unix.IPPROTO_TCP, name: unix.TCP_KEEPIDLE},
	{level: unix.IPPROTO_TCP, name: unix.TCP_KEEPINTVL},
	{level: unix.IPPROTO_TCP, name: unix.TCP_KEEPCNT},
	{level: unix.IPPROTO_TCP, name: unix.TCP_USER_TIMEOUT},
	{level: unix.IPPROTO_TCP, name: unix.TCP_NOTSENT_LOWAT},
	{level: unix.IPPROTO_TCP, name: unix.TCP_MAXSEG},
	{level: unix.IPPROTO_TCP, name: unix.TCP_WINDOW_CLAMP},
	{level: unix.IPPROTO_TCP, name: unix.TCP_CONGESTION, kind: kindString},
	{level: unix.IPPROTO_TCP, name: unix.TCP_DEFER_ACCEPT, listenOnly: true},
	{level: unix.IPPROTO_TCP, name: unix.TCP_FASTOPEN, listenOnly: true},
	{level: unix.IPPROTO_IP, name: unix.IP_TOS, v4: true},
	{level: unix.IPPROTO_IPV6, name: unix.IPV6_TCLASS, v6: true},
	{level: unix.IPPROTO_IPV6, name: unix.IPV6_V6ONLY, v6: true, listenOnly: true},
}

// optValue is one option's value in a comparable form.
type optValue struct {
	i  int
	l  unix.Linger
	tv unix.Timeval
	s  string
}

// sockOpts holds the values of copiedOpts, index for index; ok[i] is false
// where the option could not be read (not applicable to the socket).
type sockOpts struct {
	family int
	vals   [32]optValue
	ok     [32]bool
}

// allOpts selects every option in readOpts.
const allOpts = ^uint64(0)

// readOpts reads the options of fd whose bpf.OptBit is in mask (allOpts,
// or what the recorders saw the application set); forListen includes those
// that only matter to listeners. Each read is a system call, and they add
// up on the connect path. Options not read are left out of the copy.
func readOpts(fd, family int, forListen bool, mask uint64) sockOpts {
	o := sockOpts{family: family}
	for i, spec := range copiedOpts {
		if (spec.v6 && family != unix.AF_INET6) || (spec.v4 && family != unix.AF_INET) || (spec.listenOnly && !forListen) ||
			mask&bpf.OptBit(spec.level, spec.name) == 0 {
			continue
		}
		var v optValue
		var err error
		switch spec.kind {
		case kindInt, kindBuf:
			v.i, err = unix.GetsockoptInt(fd, spec.level, spec.name)
		case kindLinger:
			var l *unix.Linger
			if l, err = unix.GetsockoptLinger(fd, spec.level, spec.name); err == nil {
				v.l = *l
			}
		case kindTimeval:
			var tv *unix.Timeval
			if tv, err = unix.GetsockoptTimeval(fd, spec.level, spec.name); err == nil {
				v.tv = *tv
			}
		case kindString:
			v.s, err = unix.GetsockoptString(fd, spec.level, spec.name)
		}
		if err == nil {
			o.vals[i], o.ok[i] = v, true
		}
	}
	return o
}

// refused names the first option of o that differs from defaults and
// whose value the guard refuses to containers on host sockets
// (bpf.Refuses, the list slim.c's program is generated from): slimd, whom
// the guard trusts, must not set it for them. SO_REUSEPORT on listeners is
// slimd's own doing (reuseport groups), not the container's.
func (o sockOpts) refused(defaults sockOpts) (string, bool) {
	var b [4]byte
	for i, spec := range copiedOpts {
		if !o.ok[i] || (defaults.ok[i] && o.vals[i] == defaults.vals[i]) ||
			(spec.kind != kindInt && spec.kind != kindBuf) || spec.name == unix.SO_REUSEPORT && spec.level == unix.SOL_SOCKET {
			continue
		}
		binary.NativeEndian.PutUint32(b[:], uint32(int32(o.vals[i].i)))
		if bpf.Refuses(spec.level, spec.name, b[:]) {
			return fmt.Sprintf("%d/%d", spec.level, spec.name), true
		}
	}
	return "", false
}

// applyDiff sets on fd every option of o that differs from defaults.
// Failures are collected but do not stop the copy: a connection with one
// option missing is better than a failed connect, and the caller decides.
func (o sockOpts) applyDiff(fd int, defaults sockOpts) (int, error) {
	var errs []error
	n := 0
	for i, spec := range copiedOpts {
		if !o.ok[i] || (defaults.ok[i] && o.vals[i] == defaults.vals[i]) {
			continue
		}
		v := o.vals[i]
		var err error
		switch spec.kind {
		case kindInt:
			err = unix.SetsockoptInt(fd, spec.level, spec.name, v.i)
		case kindBuf:
			// The kernel reports twice what was set.
			err = unix.SetsockoptInt(fd, spec.level, spec.name, v.i/2)
		case kindLinger:
			err = unix.SetsockoptLinger(fd, spec.level, spec.name, &v.l)
		case kindTimeval:
			err = unix.SetsockoptTimeval(fd, spec.level, spec.name, &v.tv)
		case kindString:
			err = unix.SetsockoptString(fd, spec.level, spec.name, v.s)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("setsockopt %d/%d: %w", spec.level, spec.name, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
