package unixsock

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestListen(t *testing.T) {
	for _, network := range []string{"unix", "unixpacket"} {
		t.Run(network, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", "s.sock")
			l, err := Listen(network, path)
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(path)
			if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
				t.Fatalf("socket file %v, %v: want a 0600 socket", fi.Mode(), err)
			}
			if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
				t.Fatalf("left behind: %v", ents)
			}
			// A second server on the same path is refused while the first lives.
			if _, err := Listen(network, path); !errors.Is(err, ErrInUse) {
				t.Fatalf("second listen: %v, want ErrInUse", err)
			}
			c, err := net.Dial(network, path)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			// A successor replaces the socket (the first was killed): the
			// first's Close must not remove the successor's.
			l.UnixListener.Close()
			l2, err := Listen(network, path)
			if err != nil {
				t.Fatalf("listen over a stale socket: %v", err)
			}
			if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				t.Fatal(err)
			}
			if _, err := os.Lstat(path); err != nil {
				t.Fatal("the old listener removed its successor's socket")
			}
			l2.Close()
			l2.Close()
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("socket left after close: %v", err)
			}
		})
	}
	// Not a socket: refused, left alone.
	path := filepath.Join(t.TempDir(), "file")
	os.WriteFile(path, []byte("x"), 0o644)
	if _, err := Listen("unix", path); err == nil {
		t.Fatal("a regular file was replaced")
	}
	if _, err := Listen("tcp", filepath.Join(t.TempDir(), "s")); err == nil {
		t.Fatal("tcp accepted")
	}
}

func TestParseRights(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	oob := append(unix.UnixRights(int(r.Fd()), int(w.Fd())), unix.UnixCredentials(&unix.Ucred{Pid: 1})...)
	fds, err := ParseRights(oob)
	if err != nil || len(fds) != 2 || fds[0] != int(r.Fd()) || fds[1] != int(w.Fd()) {
		t.Fatalf("ParseRights = %v, %v; want the two fds, credentials skipped", fds, err)
	}
	if _, err := ParseRights(oob[:unix.CmsgSpace(4)-2]); err == nil {
		t.Fatal("truncated control data accepted")
	}
}
