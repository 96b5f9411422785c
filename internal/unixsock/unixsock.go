// Package unixsock makes the private unix sockets slimd's parts serve on
// (the local API, the seccomp agent, the fd keeper): owner-only from the
// moment they are reachable, never stealing a path a live server holds,
// and removed on close only while they are still the file at the path.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ErrInUse: a live server answers on the path.
var ErrInUse = errors.New("socket in use")

// liveCheck bounds the dial that tells a stale socket from a live one.
const liveCheck = 500 * time.Millisecond

// Listener is a bound unix socket at a path.
type Listener struct {
	*net.UnixListener
	path string
	info os.FileInfo
	once sync.Once
}

// Listen binds a unix socket of network "unix" or "unixpacket" at path,
// making its directory if needed. The socket is bound in a private
// directory, set to mode 0600 and renamed into place, so it is never
// reachable with looser permissions; a stale socket at path is replaced.
// A path that is not a socket is an error, and one a live server answers
// on is ErrInUse.
func Listen(network, path string) (*Listener, error) {
	if network != "unix" && network != "unixpacket" {
		return nil, fmt.Errorf("socket %s: network %q: want unix or unixpacket", path, network)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout(network, path, liveCheck); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: %w", path, ErrInUse)
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	tmp, err := os.MkdirTemp(dir, ".sock")
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	tmpPath := filepath.Join(tmp, "s")
	ln, err := net.ListenUnix(network, &net.UnixAddr{Name: tmpPath, Net: network})
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // it lives under another name
	if err := os.Chmod(tmpPath, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := os.Rename(tmpPath, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	info, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return &Listener{UnixListener: ln, path: path, info: info}, nil
}

// Close stops listening and removes the socket file if it is still this
// listener's (a successor may have replaced it). Closing twice is a no-op.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		err = l.UnixListener.Close()
		if fi, e := os.Lstat(l.path); e == nil && os.SameFile(fi, l.info) {
			os.Remove(l.path)
		}
	})
	return err
}
