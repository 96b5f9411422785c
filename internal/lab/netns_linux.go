package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted, as iproute2
// does it, so `ip netns list` shows the lab's.
const NetnsDir = "/run/netns"

// NetnsPath is the path of the named namespace name.
func NetnsPath(name string) string { return filepath.Join(NetnsDir, name) }

// ensureNetnsDir makes NetnsDir a shared mount point, the way `ip netns add`
// does, so that unmounting a namespace here also unmounts the copies that
// other mount namespaces made of it and the namespace can be freed.
func ensureNetnsDir() error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", NetnsDir, err)
	}
	// EINVAL: not a mount point yet; bind it onto itself, then share it.
	if err := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", NetnsDir, err)
	}
	if err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", NetnsDir, err)
	}
	return nil
}

// isNetns reports whether path is a mounted network namespace.
func isNetns(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// createNetns makes the named namespace. With exclusive, an existing one is
// ErrExists (that is how Run claims a container name); otherwise it is
// kept. It returns whether it made a new one.
func createNetns(name string, exclusive bool) (created bool, err error) {
	if err := ensureNetnsDir(); err != nil {
		return false, err
	}
	path := NetnsPath(name)
	if isNetns(path) {
		if exclusive {
			return false, fmt.Errorf("netns %s: %w", name, ErrExists)
		}
		return false, nil
	}
	flags := os.O_RDONLY | os.O_CREATE
	if exclusive {
		flags |= os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o444)
	if errors.Is(err, os.ErrExist) {
		// A file that is not mounted: a crashed create, or a racing one.
		return false, fmt.Errorf("netns %s: %w (remove a stale %s with slimctl lab down)", name, ErrExists, path)
	}
	if err != nil {
		return false, fmt.Errorf("netns %s: %w", name, err)
	}
	f.Close()
	if err := mountNewNetns(path); err != nil {
		os.Remove(path)
		return false, fmt.Errorf("netns %s: %w", name, err)
	}
	return true, nil
}

// mountNewNetns creates a network namespace and bind-mounts it at path.
// unshare switches only the calling thread, so it runs on a goroutine of
// its own, locked to its thread. If the thread cannot be switched back, it
// stays locked and dies with the goroutine instead of returning to the
// scheduler in the wrong namespace.
func mountNewNetns(path string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		mountErr := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
		if mountErr != nil {
			mountErr = fmt.Errorf("bind mount: %w", mountErr)
		}
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(mountErr, fmt.Errorf("return to the original netns: %w", err))
			return // thread stays locked: the runtime discards it
		}
		runtime.UnlockOSThread()
		errc <- mountErr
	}()
	return <-errc
}

// deleteNetns unmounts and removes a named namespace; a missing one is
// fine. The namespace itself goes away once no process, open fd or mount
// holds it any more.
func deleteNetns(name string) error {
	path := NetnsPath(name)
	// MNT_DETACH: an fd someone holds open must not block the removal.
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", name, err)
	}
	return nil
}

// listLabNetns returns the names in NetnsDir that start with NetnsPrefix,
// mounted or not, sorted.
func listLabNetns() ([]string, error) {
	ents, err := os.ReadDir(NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), NetnsPrefix) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// dialIn dials TCP from the network namespace at path. A socket stays in
// the namespace it was made in, whichever thread uses it later, so only
// the dial runs on a thread switched into the namespace.
func dialIn(path string) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (c net.Conn, err error) {
		nerr := ns.WithNetNSPath(path, func(ns.NetNS) error {
			var d net.Dialer
			c, err = d.DialContext(ctx, "tcp", addr)
			return nil
		})
		if nerr != nil {
			if c != nil {
				c.Close()
			}
			return nil, nerr
		}
		return c, err
	}
}

// MetricsClient is an HTTP client whose connections are made in host's
// network namespace, for its slimd's metrics address (MetricsAddr).
func MetricsClient(host string) *http.Client {
	dial := dialIn(NetnsPath(HostNetns(host)))
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) },
	}}
}
