//go:build linux

package broker_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/labtest"
	"github.com/slimnet/slim/internal/seccomp"
)

// Real OCI runtimes put a container on the fast path through the runtime
// spec's linux.seccomp.listenerPath: runc and crun install the profile
// slimctl seccomp-profile writes (seccomp.Profile, the default allowlist
// with Slim's traps) and send the notification fd to slimd's agent socket
// themselves.
func TestOCIRuntimes(t *testing.T) {
	l := labtest.New(t, labtest.Hosts(2))
	probe := labtest.Probe(t)
	srv := l.Run(lab.RunSpec{Host: "h1", Name: "srv", Command: []string{probe, "serve", "-addr", "0.0.0.0:7100"}})
	waitListener(t, l.Config, "h1", srv.IPv4, 7100, true)
	for _, rt := range []string{"runc", "crun"} {
		t.Run(rt, func(t *testing.T) {
			bin, err := exec.LookPath(rt)
			if err != nil {
				if os.Getenv("CI") != "" {
					t.Fatalf("%s not installed (scripts/deps.sh installs it)", rt)
				}
				t.Skipf("%s not installed", rt)
			}
			// The network namespace is attached by slim-cni, as a
			// runtime's CNI step would; the lab holds it with a sleeper
			// that is not itself supervised (--no-slim).
			holder := l.Run(lab.RunSpec{Host: "h2", Name: "ns-" + rt, NoSlim: true, Command: []string{"sleep", "infinity"}})
			bundle := t.TempDir()
			for _, d := range []string{"dev", "proc"} { // mount points in a read-only root
				if err := os.MkdirAll(filepath.Join(bundle, "rootfs", d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(probe)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(bundle, "rootfs", "slimprobe"), b, 0o755); err != nil {
				t.Fatal(err)
			}
			profile, err := seccomp.Profile(filepath.Join(l.Config.StateDir, "h2", "agent.sock"))
			if err != nil {
				t.Fatal(err)
			}
			spec := ociSpec(netip.AddrPortFrom(srv.IPv4, 7100).String(), holder.Netns, profile)
			js, _ := json.Marshal(spec)
			if err := os.WriteFile(filepath.Join(bundle, "config.json"), js, 0o644); err != nil {
				t.Fatal(err)
			}
			before := overlayBytes(t, "h1", "h2")
			id := "slimtest-" + rt
			cmd := exec.CommandContext(t.Context(), bin, "run", "--bundle", bundle, id)
			if rt == "crun" {
				// crun refuses hybrid cgroup hierarchies (this machine
				// mounts cgroup v1 controllers and v2 at
				// /sys/fs/cgroup/unified): give it a private mount
				// namespace where /sys/fs/cgroup is the v2 hierarchy.
				cmd = exec.CommandContext(t.Context(), "unshare", "--mount", "--propagation", "private", "sh", "-c",
					`mount -t cgroup2 none /sys/fs/cgroup && exec "$0" --cgroup-manager=disabled run --bundle "$1" "$2"`, bin, bundle, id)
			}
			t.Cleanup(func() { exec.Command(bin, "delete", "-f", id).Run() })
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s run: %v\n%s%s", rt, err, out, stderr.String())
			}
			rs := parseResults(t, string(out))
			if len(rs) != 1 {
				t.Fatalf("%s: %d results: %s", rt, len(rs), out)
			}
			checkVirtual(t, rs[0], holder.IPv4, srv.IPv4, 7100)
			if d := overlayBytes(t, "h1", "h2") - before; d > 10000 {
				t.Fatalf("%s container's 1 MB took the overlay (%d bytes)", rt, d)
			}
		})
	}
}

// ociSpec is a minimal OCI runtime spec: slimprobe connects to dst from
// the network namespace netns, under the seccomp profile profile.
func ociSpec(dst, netns string, profile *specs.LinuxSeccomp) map[string]any {
	return map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"user": map[string]any{"uid": 0, "gid": 0}, "cwd": "/",
			"args": []string{"/slimprobe", "connect", "-addr", dst, "-bytes", fmt.Sprint(1 << 20)},
			"env":  []string{"PATH=/"},
		},
		"root":     map[string]any{"path": "rootfs", "readonly": true},
		"hostname": "slimtest",
		"mounts": []map[string]any{
			{"destination": "/proc", "type": "proc", "source": "proc"},
		},
		"linux": map[string]any{
			"namespaces": []map[string]any{
				{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
				{"type": "network", "path": netns},
			},
			"seccomp": profile,
		},
	}
}
