package lab_test

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/labtest"
)

// TestLauncher runs commands through the launcher in a host namespace and
// checks where they ran, their exit codes, and that a command that cannot
// start is an error rather than an exit code.
func TestLauncher(t *testing.T) {
	labtest.Require(t)
	bin := labtest.Build(t, "slimctl")
	labtest.Lock(t)
	labtest.Sweep(t)
	cfg := lab.Config{StateDir: filepath.Join(t.TempDir(), "state"), BinDir: bin}
	t.Cleanup(func() {
		if err := down(t, cfg); err != nil {
			t.Error(err)
		}
	})
	if err := lab.EnsureWire(1500); err != nil {
		t.Fatal(err)
	}
	if err := lab.EnsureHost(1, netip.MustParsePrefix("192.168.77.1/24"), 1500); err != nil {
		t.Fatal(err)
	}
	cgRoot, err := lab.CgroupRoot()
	if err != nil {
		t.Fatal(err)
	}
	cg := lab.HostExecCgroup(cgRoot, "h1")
	if err := lab.EnsureCgroup(cg); err != nil {
		t.Fatal(err)
	}
	launcher := filepath.Join(bin, "slimctl")
	run := func(cmd ...string) (int, string, error) {
		var out bytes.Buffer
		spec := lab.LaunchSpec{Netns: lab.NetnsPath("slimlab-h1"), Cgroup: cg, Command: cmd}
		code, err := lab.RunForeground(context.Background(), launcher, spec, nil, &out, &out)
		return code, out.String(), err
	}

	code, out, err := run("sh", "-c", "cat /proc/self/cgroup; readlink /proc/self/ns/net; ip -o -4 addr show dev eth0")
	if err != nil || code != 0 {
		t.Fatalf("code %d, %v: %s", code, err, out)
	}
	ns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"0::/" + lab.CgroupDir + "/h1/host\n", "192.168.77.1/24"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, ns) {
		t.Errorf("command ran in the test's namespace %s:\n%s", ns, out)
	}

	if code, out, err := run("sh", "-c", "exit 7"); err != nil || code != 7 {
		t.Errorf("exit 7: code %d, %v: %s", code, err, out)
	}
	if code, _, err := run("/nonexistent/cmd"); err == nil || !strings.Contains(err.Error(), "/nonexistent/cmd") {
		t.Errorf("missing command: code %d, err %v; want an error naming it", code, err)
	}
	spec := lab.LaunchSpec{Netns: lab.NetnsPath("slimlab-nope"), Cgroup: cg, Command: []string{"true"}}
	if _, err := lab.RunForeground(context.Background(), launcher, spec, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "slimlab-nope") {
		t.Errorf("missing netns: err %v; want an error naming it", err)
	}
	if _, err := lab.StartDetached(context.Background(), launcher, spec); err == nil || !strings.Contains(err.Error(), "slimlab-nope") {
		t.Errorf("detached, missing netns: err %v; want an error naming it", err)
	}
}
