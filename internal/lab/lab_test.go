//go:build linux

package lab_test

// Lab tests: a real multi-host lab with slimd and slim-cni. They hold the
// machine-wide lab lock (labtest), so they run one at a time even across
// packages; -short skips them.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
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
)

// echoServer answers every TCP connection on port 7000, IPv4 or IPv6, with
// what it reads.
var echoServer = []string{"socat", "TCP6-LISTEN:7000,fork,reuseaddr,ipv6only=0", "EXEC:cat"}

// echo sends msg to ip:7000 from container from and returns the answer.
func echo(ctx context.Context, cfg lab.Config, from, ip, msg string) (string, error) {
	var out, errb bytes.Buffer
	addr := fmt.Sprintf("TCP:%s:7000,connect-timeout=2", ip)
	if strings.Contains(ip, ":") {
		addr = fmt.Sprintf("TCP6:[%s]:7000,connect-timeout=2", ip)
	}
	code, err := lab.Exec(ctx, cfg, from, lab.ExecSpec{
		Command: []string{"socat", "-t", "2", "-", addr},
		Stdin:   strings.NewReader(msg), Stdout: &out, Stderr: &errb,
	})
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", fmt.Errorf("socat exit %d: %s", code, errb.String())
	}
	return out.String(), nil
}

// TestUpRunExecDown runs containers on three hosts, moves bytes between
// them (ICMP, and TCP in both directions), checks listing, exec and
// removal, then takes the lab down and checks that nothing of it remains.
func TestUpRunExecDown(t *testing.T) {
	labtest.Require(t)
	links := rootLinks(t)
	l := labtest.New(t, labtest.Hosts(3), labtest.IPv6())
	cfg := l.Config
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	web := l.Run(lab.RunSpec{Host: "h1", Name: "web", Labels: map[string]string{"app": "web"}, Command: echoServer})
	client := l.Run(lab.RunSpec{Host: "h2", Name: "client", Command: []string{"sleep", "infinity"}})
	third := l.Run(lab.RunSpec{Host: "h3", Name: "third", NoSlim: true, Command: []string{"sleep", "infinity"}})
	seen := map[string]bool{}
	for _, c := range []lab.Container{web, client, third} {
		if !c.IPv4.IsValid() || !c.IPv6.IsValid() || seen[c.IPv4.String()] || c.PID <= 0 {
			t.Fatalf("container %+v: want fresh IPv4 and IPv6 and a pid", c)
		}
		seen[c.IPv4.String()] = true
	}

	t.Run("errors", func(t *testing.T) {
		sleep := []string{"sleep", "1"}
		if _, err := lab.Run(ctx, cfg, lab.RunSpec{Host: "h2", Name: "web", Command: sleep}); !errors.Is(err, lab.ErrExists) {
			t.Errorf("duplicate name: %v, want ErrExists", err)
		}
		if _, err := lab.Run(ctx, cfg, lab.RunSpec{Host: "h4", Name: "x", Command: sleep}); !errors.Is(err, lab.ErrNotFound) {
			t.Errorf("unknown host: %v, want ErrNotFound", err)
		}
		for _, name := range []string{"Bad", "h2", "-x", strings.Repeat("a", 21)} {
			if _, err := lab.Run(ctx, cfg, lab.RunSpec{Host: "h1", Name: name, Command: sleep}); err == nil {
				t.Errorf("name %q accepted", name)
			}
		}
		if _, err := lab.Output(ctx, cfg, "nope", "true"); !errors.Is(err, lab.ErrNotFound) {
			t.Errorf("exec in unknown container: %v, want ErrNotFound", err)
		}
	})

	t.Run("half-made container is undone", func(t *testing.T) {
		_, err := lab.Run(ctx, cfg, lab.RunSpec{Host: "h1", Name: "broken", Command: []string{"/nonexistent/cmd"}})
		if err == nil || !strings.Contains(err.Error(), "/nonexistent/cmd") {
			t.Fatalf("run: %v, want an error naming the command", err)
		}
		if _, err := os.Stat(lab.NetnsPath(lab.ContainerNetns("broken"))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns left: %v", err)
		}
		cgRoot, _ := lab.CgroupRoot()
		if m, _ := filepath.Glob(filepath.Join(cgRoot, lab.CgroupDir, "*", "c-broken")); len(m) > 0 {
			t.Errorf("cgroup left: %v", m)
		}
		eps, err := api.NewClient(lab.SocketPath(cfg, "h1")).Endpoints(ctx, "h1")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range eps {
			if e.ContainerID == lab.ContainerID("broken") {
				t.Errorf("endpoint left in slimd: %+v", e)
			}
		}
	})

	t.Run("ping", func(t *testing.T) {
		l.Output(ctx, "client", "ping", "-c", "2", "-i", "0.2", "-W", "2", web.IPv4.String())
		l.Output(ctx, "third", "ping", "-c", "1", "-W", "2", client.IPv4.String())
		l.Output(ctx, "web", "ping", "-6", "-c", "1", "-W", "2", third.IPv6.String())
		l.Output(ctx, "h2", "ping", "-c", "1", "-W", "2", "192.168.77.1") // host to host
	})

	t.Run("tcp", func(t *testing.T) {
		// The server may not listen yet: retry until it answers.
		poll.Until(t, 10*time.Second, func() error {
			got, err := echo(ctx, cfg, "client", web.IPv4.String(), "hello from h2\n")
			if err == nil && got != "hello from h2\n" {
				err = fmt.Errorf("echo answered %q", got)
			}
			return err
		})
		for _, tc := range []struct{ from, ip string }{
			{"third", web.IPv4.String()},
			{"client", web.IPv6.String()},
		} {
			msg := strings.Repeat("slim ", 20000) + "\n" // 100 kB each way
			got, err := echo(ctx, cfg, tc.from, tc.ip, msg)
			if err != nil || got != msg {
				t.Errorf("%s -> %s: %d bytes back of %d, %v", tc.from, tc.ip, len(got), len(msg), err)
			}
		}
	})

	t.Run("exec", func(t *testing.T) {
		code, err := lab.Exec(ctx, cfg, "client", lab.ExecSpec{Command: []string{"sh", "-c", "exit 3"}})
		if err != nil || code != 3 {
			t.Errorf("exit 3: code %d, %v", code, err)
		}
		var ee *lab.ExitError
		if _, err := lab.Output(ctx, cfg, "client", "sh", "-c", "echo oops >&2; exit 4"); !errors.As(err, &ee) || ee.Code != 4 || ee.Stderr != "oops" {
			t.Errorf("Output of a failing command: %v, want exit 4 with stderr oops", err)
		}
		if out := l.Output(ctx, "client", "ip", "-o", "-4", "addr", "show", "dev", lab.ContainerIface); !strings.Contains(out, client.IPv4.String()+"/32") {
			t.Errorf("client's %s: %s", lab.ContainerIface, out)
		}
	})

	t.Run("list", func(t *testing.T) {
		ls, err := lab.List(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls.Hosts) != 3 {
			t.Fatalf("%d hosts", len(ls.Hosts))
		}
		for _, h := range ls.Hosts {
			if !h.Alive || h.Peers != 2 || !h.Subnet4.IsValid() || !h.Subnet6.IsValid() || h.Error != "" {
				t.Errorf("host %+v", h)
			}
		}
		var names []string
		for _, c := range ls.Containers {
			names = append(names, c.Name)
			if !c.Alive {
				t.Errorf("container %s not alive", c.Name)
			}
		}
		if !slices.Equal(names, []string{"client", "third", "web"}) {
			t.Errorf("containers %v", names)
		}
	})

	t.Run("up again", func(t *testing.T) {
		before, _ := lab.List(ctx, cfg)
		// SIGKILL h3's slimd: Up must restart it and keep the others.
		if err := syscall.Kill(before.Hosts[2].PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 5*time.Second, func() error {
			if running(before.Hosts[2].PID) {
				return errors.New("slimd h3 still running")
			}
			return nil
		})
		if err := lab.Up(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		after, _ := lab.List(ctx, cfg)
		for i := range 2 {
			if after.Hosts[i].PID != before.Hosts[i].PID {
				t.Errorf("%s: slimd pid %d, was %d", after.Hosts[i].Name, after.Hosts[i].PID, before.Hosts[i].PID)
			}
		}
		if h := after.Hosts[2]; !h.Alive || h.PID == before.Hosts[2].PID {
			t.Errorf("h3 not restarted: %+v", h)
		}
		if got, err := echo(ctx, cfg, "third", web.IPv4.String(), "again\n"); err != nil || got != "again\n" {
			t.Errorf("echo from h3 after restart: %q, %v", got, err)
		}
	})

	t.Run("rm", func(t *testing.T) {
		if err := lab.Remove(ctx, cfg, "third"); err != nil {
			t.Fatal(err)
		}
		if running(third.PID) {
			t.Errorf("third's process %d still runs", third.PID)
		}
		if _, err := os.Stat(third.Netns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns: %v", err)
		}
		if _, err := os.Stat(third.Cgroup); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup: %v", err)
		}
		if err := lab.Remove(ctx, cfg, "third"); !errors.Is(err, lab.ErrNotFound) {
			t.Errorf("second rm: %v, want ErrNotFound", err)
		}
		eps, err := api.NewClient(lab.SocketPath(cfg, "h3")).Endpoints(ctx, "h3")
		if err != nil || len(eps) != 0 {
			t.Errorf("h3 endpoints after rm: %v, %v", eps, err)
		}
	})

	t.Run("down", func(t *testing.T) {
		ls, err := lab.List(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var pids []int
		for _, h := range ls.Hosts {
			pids = append(pids, h.PID)
		}
		for _, c := range ls.Containers {
			pids = append(pids, c.PID)
		}
		cgRoot, err := lab.CgroupRoot()
		if err != nil {
			t.Fatal(err)
		}
		r := snapshot(t, links, pids...)
		if len(r.inodes) != 6 { // wire, 3 hosts, 2 containers
			t.Errorf("%d lab namespaces, want 6", len(r.inodes))
		}
		if err := down(t, cfg); err != nil {
			t.Fatal(err)
		}
		r.assertGone(t, cgRoot, cfg.StateDir)
	})
}
