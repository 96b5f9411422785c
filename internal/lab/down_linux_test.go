package lab_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/labtest"
)

// TestDownAfterHalfMadeUp builds part of a lab by hand, as a crashed Up
// leaves it (wire, two hosts, slimd-like processes started by the launcher,
// one of which ignores SIGTERM), and checks that Down removes every
// namespace, link, cgroup and process, twice harmlessly.
func TestDownAfterHalfMadeUp(t *testing.T) {
	labtest.Require(t)
	bin := labtest.Build(t, "slimctl")
	labtest.Lock(t)
	labtest.Sweep(t)
	links := rootLinks(t)
	dir := filepath.Join(t.TempDir(), "state")
	cfg := lab.Config{StateDir: dir, BinDir: bin}
	t.Cleanup(func() { down(t, cfg) })

	if err := lab.EnsureWire(1500); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		addr := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, 77, byte(i)}), 24)
		if err := lab.EnsureHost(i, addr, 1500); err != nil {
			t.Fatal(err)
		}
		// Twice: it is idempotent.
		if err := lab.EnsureHost(i, addr, 1500); err != nil {
			t.Fatalf("again: %v", err)
		}
	}
	cgRoot, err := lab.CgroupRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var pids []int
	for _, p := range []struct {
		host, cgroup string
		cmd          []string
	}{
		{"h1", "slimd", []string{"sleep", "1000"}},
		{"h2", "slimd", []string{"sleep", "1000"}},
		{"h2", "c-stubborn", []string{"sh", "-c", "trap '' TERM; exec sleep 1000"}},
	} {
		cg := filepath.Join(cgRoot, lab.CgroupDir, p.host, p.cgroup)
		if err := lab.EnsureCgroup(cg); err != nil {
			t.Fatal(err)
		}
		pid, err := lab.StartDetached(ctx, filepath.Join(bin, "slimctl"), lab.LaunchSpec{
			Netns:   lab.NetnsPath(lab.HostNetns(p.host)),
			Cgroup:  cg,
			Log:     filepath.Join(t.TempDir(), "log"),
			Command: p.cmd,
		})
		if err != nil {
			t.Fatal(err)
		}
		if !running(pid) {
			t.Fatalf("%s: pid %d is not running", p.cmd, pid)
		}
		pids = append(pids, pid)
	}
	r := snapshot(t, links, pids...)
	if len(r.inodes) != 3 {
		t.Fatalf("%d lab namespaces, want 3 (wire, h1, h2)", len(r.inodes))
	}
	if u := nsUsers(r.inodes); len(u) != 3 {
		t.Errorf("threads in lab namespaces %v, want the 3 processes'", u)
	}

	start := time.Now()
	if err := down(t, cfg); err != nil {
		t.Fatalf("down: %v", err)
	}
	t.Logf("down took %s", time.Since(start).Round(time.Millisecond))
	r.assertGone(t, cgRoot, dir)
	if err := down(t, cfg); err != nil {
		t.Errorf("second down: %v", err)
	}
}
