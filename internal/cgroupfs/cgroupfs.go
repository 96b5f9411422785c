// Package cgroupfs finds the cgroup v2 hierarchy: where it is mounted and
// which cgroup a process is in. It is looked up, never assumed: machines
// mount it at /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid).
package cgroupfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

func of(proc string) (string, error) {
	root, err := Mount()
	if err != nil {
		return "", err
	}
	f, err := os.Open("/proc/" + proc + "/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	p, err := ParseSelf(f)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, p), nil
}

// Join moves the calling process (all its threads) into the cgroup at dir.
func Join(dir string) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
	if err != nil {
		return fmt.Errorf("join cgroup %s: %w", dir, err)
	}
	return nil
}
