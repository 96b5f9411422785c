package cgroupfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/slimnet/slim/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestMain runs the cgroup namespace child's role when asked.
func TestMain(m *testing.M) {
	if pid := os.Getenv("SLIM_CGROUPFS_CHILD_OF"); pid != "" {
		n, _ := strconv.Atoi(pid)
		self, err := Self()
		fmt.Printf("self %s %v\n", self, err)
		other, err := Of(n)
		fmt.Printf("other %s %v\n", other, err)
		if dir := os.Getenv("SLIM_CGROUPFS_MOVE_TO"); dir != "" {
			// The test's namespace stands for the host's: this VM's PID 1
			// cannot be read.
			initCgroupNS = os.Getenv("SLIM_CGROUPFS_INIT_NS")
			fmt.Printf("direct %v\n", errors.Is(writeProcs(n, dir), unix.ENOENT))
			fmt.Printf("move %v\n", Move(n, dir))
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestCgroupNamespace: a process in a private cgroup namespace (a pod's,
// where /proc/self/cgroup says "/") with the host's hierarchy mounted
// finds its real cgroup, and another process's, under the mount.
func TestCgroupNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	mount, err := Mount()
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(mount, fmt.Sprintf("slimtest-cgns-%d", os.Getpid()))
	pod, other := filepath.Join(base, "kubepods", "pod1", "ctr"), filepath.Join(base, "kubepods", "pod2", "ctr")
	for _, d := range []string{pod, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		// Children first; rmdir, as cgroupfs wants.
		for _, d := range []string{pod, other, filepath.Dir(pod), filepath.Dir(other), filepath.Join(base, "kubepods"), base} {
			if err := os.Remove(d); err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		}
	})
	into := func(dir string, cmd *exec.Cmd, flags uintptr) {
		t.Helper()
		fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		// Started in the cgroup, then a new cgroup namespace rooted there:
		// what a runtime does for a pod's container.
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Unshareflags: flags}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	sleeper := exec.Command("sleep", "60")
	into(other, sleeper, 0)
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })

	runChild := func(env ...string) string {
		t.Helper()
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), "SLIM_CGROUPFS_CHILD_OF="+strconv.Itoa(sleeper.Process.Pid))
		child.Env = append(child.Env, env...)
		var out, stderr strings.Builder
		child.Stdout, child.Stderr = &out, &stderr
		into(pod, child, unix.CLONE_NEWCGROUP)
		if err := child.Wait(); err != nil {
			t.Fatalf("child: %v\n%s", err, stderr.String())
		}
		return out.String()
	}
	want := fmt.Sprintf("self %s <nil>\nother %s <nil>\n", pod, other)
	if got := runChild(); got != want {
		t.Errorf("child in a cgroup namespace saw\n%s\nwant\n%s", got, want)
	}

	// With nsdelegate (systemd's mount option) a namespaced process may
	// not move a process outside its root by writing cgroup.procs; Move
	// does it from PID 1's namespace (a pod's slimd placing its keeper).
	keeper := filepath.Join(base, "keeper")
	if err := os.Mkdir(keeper, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(keeper); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	})
	delegate(t, mount)
	got := runChild("SLIM_CGROUPFS_MOVE_TO="+keeper, fmt.Sprintf("SLIM_CGROUPFS_INIT_NS=/proc/%d/ns/cgroup", os.Getpid()))
	if want += "direct true\nmove <nil>\n"; got != want {
		t.Errorf("child under nsdelegate saw\n%s\nwant\n%s", got, want)
	}
	if !holds(keeper, sleeper.Process.Pid) {
		t.Errorf("the sleeper is not in %s", keeper)
	}
	if err := writeProcs(sleeper.Process.Pid, other); err != nil { // for the cleanup
		t.Fatal(err)
	}
	// What the child read itself: "/" and a path above its root.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", sleeper.Process.Pid))
	if err != nil || !strings.Contains(string(b), "kubepods/pod2/ctr") {
		t.Fatalf("sleeper's cgroup as the parent sees it: %q, %v", b, err)
	}
}

func TestResolve(t *testing.T) {
	for _, tc := range []struct{ root, p, want string }{
		{"/sys/fs/cgroup", "/a/b", "/sys/fs/cgroup/a/b"},
		{"/sys/fs/cgroup/k/pod1/ctr", "/", "/sys/fs/cgroup/k/pod1/ctr"},
		{"/sys/fs/cgroup/k/pod1/ctr", "/../../pod2/ctr", "/sys/fs/cgroup/k/pod2/ctr"},
		{"/sys/fs/cgroup/k", "/../..", ""},
		{"/sys/fs/cgroup", "/..", ""},
		{"/sys/fs/cgroup/k", "/../../cgroupx", ""},
	} {
		got, err := Resolve("/sys/fs/cgroup", tc.root, tc.p)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("Resolve(%s, %s) = %q, %v; want %q", tc.root, tc.p, got, err, tc.want)
		}
	}
}

// delegate remounts the hierarchy with nsdelegate until the test ends,
// unless it already is. It holds the machine lock meanwhile: the option
// is the whole machine's, and lab tests and runtimes share it.
func delegate(t *testing.T, mount string) {
	t.Helper()
	testenv.LockMachine(t)
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range bytes.Lines(b) {
		f := strings.Fields(string(line))
		if len(f) > 5 && f[4] == mount && strings.Contains(string(line), "nsdelegate") {
			return
		}
	}
	if err := unix.Mount("", mount, "", unix.MS_REMOUNT, "nsdelegate"); err != nil {
		t.Fatalf("remount %s with nsdelegate: %v", mount, err)
	}
	t.Cleanup(func() {
		if err := unix.Mount("", mount, "", unix.MS_REMOUNT, ""); err != nil {
			t.Errorf("remount %s without nsdelegate: %v", mount, err)
		}
	})
}
