//go:build linux

package broker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/labtest"
	"github.com/slimnet/slim/internal/poll"
	"github.com/slimnet/slim/internal/seccomp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The Kubernetes node path, end to end: containerd's CRI service on two
// lab hosts, driven over gRPC as the kubelet drives it, with Slim's CNI
// configuration and pods under Slim's Localhost seccomp profile. Images
// are built here from the host's files (busybox, nginx, memcached and
// their libraries); nothing is pulled.
func TestCRI(t *testing.T) {
	labtest.Require(t)
	for _, bin := range []string{"containerd", "ctr", "busybox"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed (scripts/deps.sh installs containerd and busybox-static)", bin)
			}
			t.Skipf("%s not installed", bin)
		}
	}
	l := labtest.New(t, labtest.Hosts(2))
	dir := t.TempDir()
	images := []criImage{
		{name: "localhost/slim-pause:test", entrypoint: []string{"/bin/sleep", "infinity"}},
		{name: "localhost/slim-busybox:test", entrypoint: []string{"/bin/sh"}},
		{name: "localhost/slim-memcached:test", entrypoint: []string{"/usr/bin/memcached", "-u", "root", "-l", "0.0.0.0", "-p", "11211"}, binaries: []string{"/usr/bin/memcached"}},
		{name: "localhost/slim-nginx:test", entrypoint: []string{"/usr/sbin/nginx", "-c", "/etc/nginx/nginx.conf"}, binaries: []string{"/usr/sbin/nginx"},
			files: map[string]string{"/etc/nginx/nginx.conf": nginxConf, "/var/log/nginx/.keep": "", "/var/lib/nginx/.keep": ""}},
	}
	var archives []string
	for i, img := range images {
		p := filepath.Join(dir, fmt.Sprintf("image%d.tar", i))
		if err := img.write(p); err != nil {
			t.Fatal(err)
		}
		archives = append(archives, p)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	h1 := startContainerd(t, ctx, l, "h1", filepath.Join(dir, "h1"), archives)
	h2 := startContainerd(t, ctx, l, "h2", filepath.Join(dir, "h2"), archives)

	// Servers on h1 (nginx) and h2 (memcached), each in a pod of its own
	// under the profile.
	web := h1.runPod(t, ctx, "web", images[3].name, nil, h1.profile)
	mc := h2.runPod(t, ctx, "memcached", images[2].name, nil, h2.profile)
	client := h2.runPod(t, ctx, "client", images[1].name, []string{"/bin/sleep", "3600"}, h2.profile)

	// Each pod's address comes from slim-cni: slimd holds its endpoint.
	for _, p := range []*criPod{web, mc, client} {
		ep, err := api.NewClient(lab.SocketPath(l.Config, p.host)).Endpoint(ctx, api.Attachment{ContainerID: p.sandbox, IfName: "eth0"})
		if err != nil || ep.IPv4 != p.ip {
			t.Fatalf("pod %s: CRI says %s, slimd's endpoint %+v, %v", p.name, p.ip, ep, err)
		}
	}
	waitListener(t, l.Config, "h1", web.ip, 8080, true)
	waitListener(t, l.Config, "h2", mc.ip, 11211, true)

	// The client pod reaches both through exec'd processes, swapped.
	swaps := metric(t, "h2", "slim_broker_swaps_total", `op="connect"`)
	// nginx sees virtual addresses only: the client pod's and its own
	// (accept's peer and getsockname), not the hosts'.
	out := client.exec(t, ctx, "wget", "-q", "-O", "-", fmt.Sprintf("http://%s:8080/", web.ip))
	if want := fmt.Sprintf("hello from nginx: %s to %s\n", client.ip, web.ip); out != want {
		t.Errorf("nginx on h1 answered %q, want %q", out, want)
	}
	out = client.exec(t, ctx, "sh", "-c", fmt.Sprintf(`printf 'set k 0 0 5\r\nslim!\r\nget k\r\nquit\r\n' | nc %s 11211`, mc.ip))
	if !strings.Contains(out, "STORED") || !strings.Contains(out, "slim!") {
		t.Errorf("memcached on h2 answered %q", out)
	}
	if n := metric(t, "h2", "slim_broker_swaps_total", `op="connect"`) - swaps; n < 2 {
		t.Errorf("%v connects swapped on h2, want both (the fast path, not the overlay)", n)
	} else {
		t.Logf("%v connects from exec'd processes swapped on h2", n)
	}

	// A container whose profile is missing fails with a clear error.
	_, err := h2.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: client.sandbox, SandboxConfig: client.config,
		Config: containerConfig("noprofile", images[1].name, []string{"/bin/true"}, filepath.Join(dir, "absent.json"))})
	if err == nil || !strings.Contains(err.Error(), "absent.json") {
		t.Errorf("a container with a missing profile: %v, want an error naming the file", err)
	}
	t.Logf("missing profile: %v", err)

	// Removing a pod removes its endpoint and listener everywhere.
	web.remove(t, ctx)
	if _, err := api.NewClient(lab.SocketPath(l.Config, "h1")).Endpoint(ctx, api.Attachment{ContainerID: web.sandbox, IfName: "eth0"}); err == nil {
		t.Error("the removed pod's endpoint is still there")
	}
	waitListener(t, l.Config, "h2", web.ip, 8080, false)

	// Removing the client, which connected, also gives back its port
	// blocks: the other host's BPF map drops them.
	h1api, h2api := api.NewClient(lab.SocketPath(l.Config, "h1")), api.NewClient(lab.SocketPath(l.Config, "h2"))
	ep, err := h2api.Endpoint(ctx, api.Attachment{ContainerID: client.sandbox, IfName: "eth0"})
	if err != nil || len(ep.PortBlocks) == 0 {
		t.Fatalf("the client's endpoint %+v (%v): want port blocks, it connected", ep, err)
	}
	fp, err := h1api.FastPath(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client.remove(t, ctx)
	poll.Until(t, 15*time.Second, func() error {
		st, err := h1api.FastPath(ctx)
		if err != nil {
			return err
		}
		if want := fp.BPFPortBlocks - len(ep.PortBlocks); st.BPFPortBlocks != want {
			return fmt.Errorf("h1's BPF map holds %d port blocks, want %d", st.BPFPortBlocks, want)
		}
		return nil
	})
	if _, err := h2api.Endpoint(ctx, api.Attachment{ContainerID: client.sandbox, IfName: "eth0"}); err == nil {
		t.Error("the removed client's endpoint is still there")
	}
}

// nginxConf serves one answer on port 8080, in the foreground, with
// every path nginx writes under /tmp.
const nginxConf = `daemon off;
master_process off;
user root;
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr;
events {}
http {
	access_log off;
	client_body_temp_path /tmp/body;
	proxy_temp_path /tmp/proxy;
	fastcgi_temp_path /tmp/fastcgi;
	uwsgi_temp_path /tmp/uwsgi;
	scgi_temp_path /tmp/scgi;
	server {
		listen 8080;
		location / { return 200 "hello from nginx: $remote_addr to $server_addr\n"; }
	}
}
`

// criImage is an OCI image built from host files: busybox with every
// applet, /etc/passwd and /etc/group, binaries with the libraries they
// load, and literal files.
type criImage struct {
	name       string
	entrypoint []string
	binaries   []string
	files      map[string]string
}

// write writes the image as an OCI layout archive, as `ctr images
// import` takes it.
func (img criImage) write(path string) error {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	add := func(name string, mode int64, body []byte, link string) error {
		h := &tar.Header{Name: strings.TrimPrefix(name, "/"), Mode: mode, Size: int64(len(body)), ModTime: time.Unix(0, 0)}
		switch {
		case link != "":
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, link, 0
		case strings.HasSuffix(name, "/"):
			h.Typeflag = tar.TypeDir
		default:
			h.Typeflag = tar.TypeReg
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return err
	}
	entries := []layerEntry{
		{"/bin/", 0o755, nil, ""}, {"/etc/", 0o755, nil, ""}, {"/tmp/", 0o1777, nil, ""}, {"/proc/", 0o755, nil, ""},
		{"/sys/", 0o755, nil, ""}, {"/dev/", 0o755, nil, ""}, {"/bin/busybox", 0o755, bb, ""},
		{"/etc/passwd", 0o644, []byte("root:x:0:0:root:/:/bin/sh\n"), ""}, {"/etc/group", 0o644, []byte("root:x:0:\n"), ""},
	}
	list, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		return err
	}
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" {
			entries = append(entries, layerEntry{"/bin/" + a, 0o777, nil, "busybox"})
		}
	}
	seen := map[string]bool{}
	for _, b := range img.binaries {
		deps, err := exec.Command("ldd", b).Output()
		if err != nil {
			return fmt.Errorf("ldd %s: %w", b, err)
		}
		paths := []string{b}
		for _, f := range strings.Fields(string(deps)) {
			if strings.HasPrefix(f, "/") {
				paths = append(paths, f)
			}
		}
		for _, p := range paths {
			real, err := filepath.EvalSymlinks(p)
			if err != nil || seen[p] {
				continue
			}
			seen[p] = true
			body, err := os.ReadFile(real)
			if err != nil {
				return err
			}
			for _, d := range parents(p) {
				if !seen[d] {
					seen[d] = true
					entries = append(entries, layerEntry{d, 0o755, nil, ""})
				}
			}
			entries = append(entries, layerEntry{p, 0o755, body, ""})
		}
	}
	for name, body := range img.files {
		for _, d := range parents(name) {
			entries = append(entries, layerEntry{d, 0o755, nil, ""})
		}
		entries = append(entries, layerEntry{name, 0o644, []byte(body), ""})
	}
	for _, e := range entries {
		if err := add(e.name, e.mode, e.body, e.link); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	blobs := map[string][]byte{}
	blob := func(b []byte) (string, int) {
		d := fmt.Sprintf("sha256:%x", sha256.Sum256(b))
		blobs[d] = b
		return d, len(b)
	}
	ld, ls := blob(layer.Bytes())
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, "Entrypoint": img.entrypoint, "WorkingDir": "/"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{ld}},
	})
	cd, cs := blob(cfg)
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}},
	})
	md, ms := blob(man)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
			"platform":    map[string]string{"architecture": "amd64", "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": img.name}}},
	})
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ow := tar.NewWriter(f)
	files := [][2]any{{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)}, {"index.json", index}}
	for _, d := range slices.Sorted(func(yield func(string) bool) {
		for d := range blobs {
			if !yield(d) {
				return
			}
		}
	}) {
		files = append(files, [2]any{"blobs/sha256/" + strings.TrimPrefix(d, "sha256:"), blobs[d]})
	}
	for _, fe := range files {
		body := fe[1].([]byte)
		if err := ow.WriteHeader(&tar.Header{Name: fe[0].(string), Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		if _, err := ow.Write(body); err != nil {
			return err
		}
	}
	return ow.Close()
}

// layerEntry is a file of an image layer: a directory (name ends in /),
// a regular file, or a symbolic link to link.
type layerEntry struct {
	name string
	mode int64
	body []byte
	link string
}

// parents are the directories above p, outermost first, with a trailing
// slash.
func parents(p string) []string {
	var out []string
	for d := filepath.Dir(p); d != "/" && d != "."; d = filepath.Dir(d) {
		out = append([]string{d + "/"}, out...)
	}
	return out
}

// criHost is a containerd with its CRI service in a lab host's network
// namespace, where a kubelet's node would run it.
type criHost struct {
	host    string
	dir     string
	rt      cri.RuntimeServiceClient
	profile string // Slim's Localhost profile for this host's slimd
}

func startContainerd(t *testing.T, ctx context.Context, l *labtest.Lab, host, dir string, archives []string) *criHost {
	t.Helper()
	h := &criHost{host: host, dir: dir}
	for _, d := range []string{"cni/bin", "cni/conf", "logs", "seccomp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The runtime finds slim-cni and the loopback plugin in one directory.
	for name, target := range map[string]string{"slim-cni": filepath.Join(l.Config.BinDir, "slim-cni"), "loopback": "/usr/lib/cni/loopback"} {
		if err := os.Symlink(target, filepath.Join(dir, "cni/bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	// As the DaemonSet's: containerd 1.6 speaks CNI up to 1.0.0 and reads
	// cniVersion; newer runtimes pick the highest of cniVersions.
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0"],"name":"slim","plugins":[{"type":"slim-cni","socket":%q}]}`, lab.SocketPath(l.Config, host))
	if err := os.WriteFile(filepath.Join(dir, "cni/conf/10-slim.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	profile, err := seccomp.Profile(filepath.Join(l.Config.StateDir, host, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := json.MarshalIndent(profile, "", "  ")
	h.profile = filepath.Join(dir, "seccomp", seccomp.ProfileName())
	if err := os.WriteFile(h.profile, pb, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %[3]q
[ttrpc]
  address = "%[3]s.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/slim-pause:test"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "runc"
        SystemdCgroup = false
        Root = %[4]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[5]q
    conf_dir = %[6]q
    max_conf_num = 1
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, filepath.Join(dir, "runc"), filepath.Join(dir, "cni/bin"), filepath.Join(dir, "cni/conf"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	// nsenter, not ip netns exec: runc needs the host's cgroup mounts,
	// which ip netns exec's fresh /sys hides.
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+lab.NetnsPath(lab.HostNetns(host)), "containerd", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		unmountUnder(t, dir)
		removeCgroups(t, "slimcri-"+host)
		for _, d := range []string{"/run/containerd/s", "/run/containerd/fifo", "/run/containerd/runc/k8s.io", "/run/containerd/runc", "/run/containerd"} {
			os.Remove(d) // only if empty: another containerd may use them
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("containerd on %s:\n%s", host, lastLines(string(b), 40))
		}
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.rt = cri.NewRuntimeServiceClient(conn)
	poll.Until(t, 20*time.Second, func() error {
		_, err := h.rt.Version(ctx, &cri.VersionRequest{})
		return err
	})
	for _, a := range archives {
		if out, err := exec.CommandContext(ctx, "ctr", "--address", sock, "-n", "k8s.io", "images", "import", "--all-platforms", a).CombinedOutput(); err != nil {
			t.Fatalf("import %s on %s: %v\n%s", a, host, err, out)
		}
	}
	return h
}

// unmountUnder detaches every mount below dir (a runtime that stopped
// mid-way may leave rootfs and netns mounts behind).
func unmountUnder(t *testing.T, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	slices.Reverse(mounts)
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", m, err)
		}
	}
}

// removeCgroups removes the cgroup name (and what runc made below it)
// from every cgroup hierarchy: runc leaves pods' cgroup parents behind.
func removeCgroups(t *testing.T, name string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		i := slices.Index(f, "-")
		if i < 0 || i+1 >= len(f) || (f[i+1] != "cgroup" && f[i+1] != "cgroup2") {
			continue
		}
		root := filepath.Join(f[4], name)
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs) // children first
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				t.Logf("remove cgroup %s: %v", d, err)
			}
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// criPod is a pod of one container.
type criPod struct {
	h         *criHost
	name      string
	host      string
	sandbox   string
	container string
	config    *cri.PodSandboxConfig
	ip        netip.Addr
	removed   bool
}

func containerConfig(name, image string, cmd []string, profile string) *cri.ContainerConfig {
	return &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: name},
		Image:    &cri.ImageSpec{Image: image},
		Command:  cmd,
		LogPath:  name + ".log",
		Linux: &cri.LinuxContainerConfig{SecurityContext: &cri.LinuxContainerSecurityContext{
			Seccomp: &cri.SecurityProfile{ProfileType: cri.SecurityProfile_Localhost, LocalhostRef: profile},
		}},
	}
}

// runPod runs a pod whose one container runs image (cmd, or the image's
// entrypoint if nil) under the Localhost profile profile.
func (h *criHost) runPod(t *testing.T, ctx context.Context, name, image string, cmd []string, profile string) *criPod {
	t.Helper()
	logs := filepath.Join(h.dir, "logs", name)
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &criPod{h: h, name: name, host: h.host, config: &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "uid-" + name},
		Hostname:     name,
		LogDirectory: logs,
		Linux: &cri.LinuxPodSandboxConfig{CgroupParent: "/slimcri-" + h.host, SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_POD, Pid: cri.NamespaceMode_CONTAINER, Ipc: cri.NamespaceMode_POD}}},
	}}
	sb, err := h.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: p.config})
	if err != nil {
		t.Fatalf("run pod %s on %s: %v", name, h.host, err)
	}
	p.sandbox = sb.PodSandboxId
	t.Cleanup(func() { p.remove(t, context.Background()) })
	st, err := h.rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: p.sandbox})
	if err != nil {
		t.Fatal(err)
	}
	if p.ip, err = netip.ParseAddr(st.Status.GetNetwork().GetIp()); err != nil {
		t.Fatalf("pod %s: address %q: %v", name, st.Status.GetNetwork().GetIp(), err)
	}
	c, err := h.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: p.sandbox, SandboxConfig: p.config,
		Config: containerConfig(name, image, cmd, profile)})
	if err != nil {
		t.Fatalf("create container %s: %v", name, err)
	}
	p.container = c.ContainerId
	if _, err := h.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: p.container}); err != nil {
		t.Fatalf("start container %s: %v", name, err)
	}
	return p
}

// exec runs cmd in the pod's container, as kubectl exec does, and returns
// its stdout; it must exit 0.
func (p *criPod) exec(t *testing.T, ctx context.Context, cmd ...string) string {
	t.Helper()
	r, err := p.h.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: p.container, Cmd: cmd, Timeout: 20})
	if err != nil || r.ExitCode != 0 {
		t.Fatalf("exec %v in %s: %v, exit %d, stderr %s", cmd, p.name, err, r.GetExitCode(), r.GetStderr())
	}
	return string(r.Stdout)
}

// remove stops and removes the pod, as the kubelet does; twice is fine.
func (p *criPod) remove(t *testing.T, ctx context.Context) {
	if p.removed {
		return
	}
	p.removed = true
	if _, err := p.h.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: p.sandbox}); err != nil {
		t.Errorf("stop pod %s: %v", p.name, err)
	}
	if _, err := p.h.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: p.sandbox}); err != nil {
		t.Errorf("remove pod %s: %v", p.name, err)
	}
}
