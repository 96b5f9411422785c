package lab_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/poll"
)

// running reports whether pid is a live process; a zombie is not (the
// machine's init may be slow to reap orphans, or never do it).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// nsInode is the inode of a namespace file.
func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// nsUsers lists the threads whose network namespace is one of inodes.
func nsUsers(inodes []uint64) []string {
	var users []string
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/ns/net")
	for _, p := range tasks {
		l, err := os.Readlink(p)
		if err != nil {
			continue
		}
		for _, ino := range inodes {
			if l == fmt.Sprintf("net:[%d]", ino) {
				users = append(users, p)
			}
		}
	}
	return users
}

// rootLinks names the links of the test's (root) namespace.
func rootLinks(t *testing.T) []string {
	t.Helper()
	ls, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	return names
}

// remains is what is left of a lab, as a snapshot taken before Down.
type remains struct {
	inodes []uint64 // of its namespaces
	pids   []int
	links  []string // of the root namespace before the lab
}

// snapshot records what must be gone after Down. rootLinks are the root
// namespace's links from before the lab existed.
func snapshot(t *testing.T, links []string, pids ...int) remains {
	t.Helper()
	names, err := lab.ListLabNetns()
	if err != nil {
		t.Fatal(err)
	}
	r := remains{pids: pids, links: links}
	for _, n := range names {
		r.inodes = append(r.inodes, nsInode(t, lab.NetnsPath(n)))
	}
	return r
}

// assertGone checks that no namespace, link, cgroup or process of the lab
// remains.
func (r remains) assertGone(t *testing.T, cgRoot, stateDir string) {
	t.Helper()
	if names, err := lab.ListLabNetns(); err != nil || len(names) > 0 {
		t.Errorf("namespaces left in %s: %v %v", lab.NetnsDir, names, err)
	}
	// A namespace lives on while a thread is in it; the lab's must be
	// free, so their links (wire, veths, vxlan) are gone with them.
	poll.Until(t, 5*time.Second, func() error {
		if u := nsUsers(r.inodes); len(u) > 0 {
			return fmt.Errorf("threads still in lab namespaces: %v", u)
		}
		return nil
	})
	if got := rootLinks(t); !slices.Equal(got, r.links) {
		t.Errorf("root namespace links changed: %v, were %v", got, r.links)
	}
	if _, err := os.Stat(filepath.Join(cgRoot, lab.CgroupDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s/%s still there: %v", cgRoot, lab.CgroupDir, err)
	}
	for _, pid := range r.pids {
		if running(pid) {
			t.Errorf("process %d still running", pid)
		}
	}
	if _, err := os.Stat(stateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir %s still there: %v", stateDir, err)
	}
}

// down runs lab.Down with a bounded context.
func down(t *testing.T, cfg lab.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return lab.Down(ctx, cfg)
}
