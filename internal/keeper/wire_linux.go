package keeper

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/slimnet/slim/internal/unixsock"
	"golang.org/x/sys/unix"
)

// maxFDsPerMsg sizes the control buffer: valid messages carry at most one
// fd; room for a few more lets us see (and close) what a bad peer sent
// rather than have the kernel drop them with MSG_CTRUNC.
const maxFDsPerMsg = 4

// conn is one end of a keeper connection with its receive buffers. It is
// not safe for concurrent use.
type conn struct {
	c   *net.UnixConn
	buf []byte
	oob []byte
}

func newConn(c *net.UnixConn) *conn {
	return &conn{c: c, buf: make([]byte, maxMsg+1), oob: make([]byte, unix.CmsgSpace(4*maxFDsPerMsg))}
}

// errProtocol marks a peer that broke the protocol: the connection is
// closed.
var errProtocol = errors.New("protocol violation")

// recv reads one message and the fds that came with it (close-on-exec). On
// any error it has closed the fds. A message that does not fit the buffer
// (MSG_TRUNC) or whose fds did not fit (MSG_CTRUNC) is an errProtocol.
func (c *conn) recv(deadline time.Time) (message, []int, error) {
	c.c.SetReadDeadline(deadline)
	n, oobn, flags, _, err := c.c.ReadMsgUnix(c.buf, c.oob)
	var fds []int
	if oobn > 0 {
		var perr error
		fds, perr = unixsock.ParseRights(c.oob[:oobn])
		if perr != nil && err == nil {
			err = fmt.Errorf("%w: %w", errProtocol, perr)
		}
	}
	if err == nil && flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		err = fmt.Errorf("%w: message truncated (flags %#x)", errProtocol, flags)
	}
	var m message
	if err == nil {
		m, err = parse(c.buf[:n])
		if err != nil {
			err = fmt.Errorf("%w: %w", errProtocol, err)
		}
	}
	if err != nil {
		closeAll(fds)
		return message{}, nil, err
	}
	return m, fds, nil
}

// send writes one message with fd attached if fd >= 0.
func (c *conn) send(m message, fd int, deadline time.Time) error {
	b := m.marshal()
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	c.c.SetWriteDeadline(deadline)
	n, _, err := c.c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return err
	}
	if n != len(b) {
		return fmt.Errorf("wrote %d of %d bytes", n, len(b))
	}
	return nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// peerCred returns the credentials of the process at the other end.
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", serr)
	}
	return cred, nil
}

// lost reports whether err means the peer has gone away.
func lost(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, net.ErrClosed)
}

// checkKeyMeta validates what a client may store.
func checkKeyMeta(key string, meta []byte) error {
	if key == "" || len(key) > MaxKey {
		return fmt.Errorf("key of %d bytes (1..%d): %w", len(key), MaxKey, ErrInvalid)
	}
	if len(meta) > MaxMeta {
		return fmt.Errorf("meta of %d bytes (max %d): %w", len(meta), MaxMeta, ErrInvalid)
	}
	return nil
}
