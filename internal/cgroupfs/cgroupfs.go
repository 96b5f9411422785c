// Package cgroupfs finds the cgroup v2 hierarchy: where it is mounted and
// which cgroup a process is in. It is looked up, never assumed: machines
// mount it at /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid).
package cgroupfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrNoCgroup2 means the machine has no cgroup v2 mount.
var ErrNoCgroup2 = errors.New("no cgroup2 mount in /proc/self/mountinfo")

// ParseMount returns the mount point of the first cgroup2 file
// system in a /proc/self/mountinfo listing. The machines we run on mount it
// at /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid), so it is
// looked up, never assumed.
//
// A mountinfo line is
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// with any number of optional fields before the "-" separator; the file
// system type follows it. Paths escape space, tab, newline and backslash as
// octal (\040).
func ParseMount(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) {
			continue
		}
		if fields[sep+1] != "cgroup2" {
			continue
		}
		return unescapeMountPath(fields[4])
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	return "", ErrNoCgroup2
}

// unescapeMountPath undoes the kernel's octal escapes (\ooo) in mountinfo.
func unescapeMountPath(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("bad escape in mount path %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in mount path %q", s)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// Mount returns the cgroup2 mount point of this process's mount namespace.
func Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	return ParseMount(f)
}

// ParseSelf returns the cgroup v2 path ("0::" line) of a /proc/PID/cgroup
// listing, relative to the hierarchy's root.
func ParseSelf(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no cgroup v2 entry: %w", ErrNoCgroup2)
}

// Self returns the directory of the calling process's cgroup v2.
func Self() (string, error) { return of("self") }

// Of returns the directory of process pid's cgroup v2.
func Of(pid int) (string, error) { return of(strconv.Itoa(pid)) }

// of resolves /proc/PROC/cgroup, which the kernel writes relative to the
// reader's cgroup namespace root, against where that root is under the
// mount: in a pod with a private cgroup namespace and the host's
// hierarchy mounted, "/" is the pod's container, not the host's root.
func of(proc string) (string, error) {
	mount, err := Mount()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile("/proc/" + proc + "/cgroup")
	if err != nil {
		return "", err
	}
	p, err := ParseSelf(bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	root, err := nsRoot(mount)
	if err != nil {
		return "", err
	}
	return Resolve(mount, root, p)
}

// Resolve joins a /proc/PID/cgroup path p (relative to the cgroup
// namespace root, "/../x" for cgroups outside it) to the namespace root's
// directory root, and refuses a result outside the mount.
func Resolve(mount, root, p string) (string, error) {
	dir := filepath.Join(root, p)
	if rel, err := filepath.Rel(mount, dir); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("cgroup %s (namespace root %s) is outside the cgroup2 mount %s: mount the host's hierarchy", p, root, mount)
	}
	return dir, nil
}

var (
	rootMu    sync.Mutex
	rootCache = map[string]string{}
)

// nsRoot returns the directory, under mount, of this process's cgroup
// namespace root (fixed for the process's life, so found once). Without
// a namespace, or with the namespace's own mount, it is the mount itself;
// otherwise (the host's hierarchy mounted into a container) the
// directory whose cgroup.procs lists this process, less the path
// /proc/self/cgroup gives.
func nsRoot(mount string) (string, error) {
	rootMu.Lock()
	defer rootMu.Unlock()
	if r, ok := rootCache[mount]; ok {
		return r, nil
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	p, err := ParseSelf(bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	pid := os.Getpid()
	dir := filepath.Join(mount, p)
	if !holds(dir, pid) {
		if dir, err = find(mount, pid); err != nil {
			return "", err
		}
	}
	rest := filepath.Clean(p)
	root := dir
	if rest != "/" {
		var ok bool
		if root, ok = strings.CutSuffix(dir, rest); !ok {
			return "", fmt.Errorf("cgroup %s holds this process, which sees itself in %s", dir, p)
		}
	}
	rootCache[mount] = root
	return root, nil
}

// find walks the hierarchy for the cgroup that lists pid.
func find(mount string, pid int) (string, error) {
	var found string
	err := filepath.WalkDir(mount, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == mount {
				return err
			}
			return nil // removed while we walked, or unreadable: not ours
		}
		if !d.IsDir() {
			return nil
		}
		if holds(path, pid) {
			found = path
			return fs.SkipAll
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("find this process's cgroup under %s: %w", mount, err)
	}
	if found == "" {
		return "", fmt.Errorf("no cgroup under %s lists process %d: the mount is not this process's hierarchy", mount, pid)
	}
	return found, nil
}

// holds reports whether cgroup dir lists process pid.
func holds(dir string, pid int) bool {
	pids, err := PIDs(dir)
	return err == nil && slices.Contains(pids, pid)
}

// PIDs lists the processes in one cgroup, not in its children. A cgroup
// that does not exist has none.
func PIDs(dir string) ([]int, error) {
	f, err := os.Open(filepath.Join(dir, "cgroup.procs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var pids []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f.Name(), err)
		}
		pids = append(pids, pid)
	}
	if err := sc.Err(); err != nil && !errors.Is(err, unix.ENODEV) {
		// ENODEV: the cgroup was removed while we read it.
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return pids, nil
}

// Move moves process pid (all its threads) into the cgroup at dir.
//
// A process in a cgroup namespace (a pod's container) may not move a
// process out of its namespace root when the hierarchy is mounted with
// nsdelegate (systemd mounts it so): the write fails with ENOENT. Move
// then writes from a thread in PID 1's cgroup namespace, which takes the
// host's PID namespace (hostPID) and CAP_SYS_ADMIN.
func Move(pid int, dir string) error {
	err := writeProcs(pid, dir)
	if !errors.Is(err, unix.ENOENT) {
		return err
	}
	if _, serr := os.Stat(dir); serr != nil {
		return err // the cgroup itself is missing
	}
	if ierr := inInitCgroupNS(func() error { return writeProcs(pid, dir) }); ierr != nil {
		return fmt.Errorf("%w (across the cgroup namespace: %w)", err, ierr)
	}
	return nil
}

func writeProcs(pid int, dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("move process %d to cgroup %s: %w", pid, dir, err)
	}
	return nil
}

// initCgroupNS is the host's cgroup namespace, as a pod with hostPID sees
// it (tests point it elsewhere: a VM's PID 1 may refuse to be read).
var initCgroupNS = "/proc/1/ns/cgroup"

// inInitCgroupNS runs fn on a thread that joined PID 1's cgroup
// namespace. The thread is never handed back to the runtime: it exits
// with its goroutine, and its namespace with it.
func inInitCgroupNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(initCgroupNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("PID 1's cgroup namespace: %w", err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWCGROUP); err != nil {
			errc <- fmt.Errorf("join PID 1's cgroup namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Join moves the calling process (all its threads) into the cgroup at dir.
func Join(dir string) error { return Move(os.Getpid(), dir) }
