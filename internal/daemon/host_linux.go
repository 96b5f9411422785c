package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/slimnet/slim/internal/cgroupfs"
	"github.com/slimnet/slim/internal/nat"
	"golang.org/x/sys/unix"
)

// reservePorts adds [first, last] to net.ipv4.ip_local_reserved_ports (which
// also covers IPv6), keeping what is there: the kernel then never gives
// these ports to anyone else as ephemeral ports, while explicit binds (ours)
// still work.
func reservePorts(first, last uint16) error {
	const path = "/proc/sys/net/ipv4/ip_local_reserved_ports"
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	cur := strings.TrimSpace(string(b))
	want := fmt.Sprintf("%d-%d", first, last)
	for _, r := range strings.Split(cur, ",") {
		if r == want {
			return nil
		}
	}
	v := want
	if cur != "" {
		v = cur + "," + want
	}
	if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
		return fmt.Errorf("reserve ports %s: %w", want, err)
	}
	return nil
}

// ownCgroup returns the cgroup the BPF programs attach to: slimd's own,
// which must hold nothing else. If slimd runs in the root cgroup (no
// service manager put it anywhere), it makes <cgroup2>/slim/<node> and
// moves itself there, before any host socket exists: sockets belong to
// the cgroup of the process that created them.
func (d *Daemon) ownCgroup() (string, error) {
	self, err := cgroupfs.Self()
	if err != nil {
		return "", err
	}
	root, err := cgroupfs.Mount()
	if err != nil {
		return "", err
	}
	if filepath.Clean(self) != filepath.Clean(root) {
		return self, nil
	}
	dir := filepath.Join(root, "slim", d.cfg.NodeName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("make slimd cgroup: %w", err)
	}
	if err := cgroupfs.Join(dir); err != nil {
		return "", err
	}
	return dir, nil
}

// cgroupOf is cgroup directory dir as nftables' socket cgroupv2 match
// takes it: its inode, and its depth below the cgroup2 mount.
func cgroupOf(dir string) (nat.Cgroup, error) {
	root, err := cgroupfs.Mount()
	if err != nil {
		return nat.Cgroup{}, err
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nat.Cgroup{}, fmt.Errorf("%s is not below the cgroup2 mount %s", dir, root)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nat.Cgroup{}, err
	}
	level := 0
	if rel != "." {
		level = len(strings.Split(rel, string(filepath.Separator)))
	}
	return nat.Cgroup{ID: st.Ino, Level: uint32(level)}, nil
}
