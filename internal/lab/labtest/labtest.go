// Package labtest gives tests a running lab: labtest.New(t, labtest.Hosts(3))
// builds slimd, slim-cni and slimctl (once per test binary), brings a lab up
// in a fresh state directory and registers its teardown with t.Cleanup.
//
// The lab's namespace names are fixed (slimlab-*), so two labs cannot exist
// at once: New holds a machine-wide lock (an flock on LockPath) from before
// Up until after Down, which serializes lab tests across packages and test
// binaries. Do not call t.Parallel in a lab test; it would only wait for the
// lock. Before Up, New sweeps whatever an earlier crashed test left (holding
// the lock, nothing else can be running).
//
// Lab tests need root; they skip without it, except under CI (the CI
// environment variable set), where they fail. -short skips them.
package labtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/testenv"
)

// LockPath is the machine-wide lock every lab test holds.
const LockPath = testenv.MachineLock

// Timeouts for the lab's life cycle in tests.
const (
	// upTimeout bounds Up: building binaries is done before, so this is
	// slimd start plus peer discovery (see lab.DefaultReadyTimeout).
	upTimeout = 2 * time.Minute
	// downTimeout bounds Down: graceful stops of containers and slimds
	// (5 s and 10 s grace) plus namespace removal.
	downTimeout = time.Minute
)

type options struct {
	hosts    int
	ipv6     bool
	tls      bool
	members  int
	leaseTTL time.Duration
	caps     []string
}

// Option configures New.
type Option func(*options)

// Hosts sets the number of hosts (default 2).
func Hosts(n int) Option { return func(o *options) { o.hosts = n } }

// IPv6 gives containers IPv6 addresses too.
func IPv6() Option { return func(o *options) { o.ipv6 = true } }

// TLS runs the store with mutual TLS and etcd's role-based access.
func TLS() Option { return func(o *options) { o.tls = true } }

// EtcdMembers runs the store as an external etcd cluster of n members.
func EtcdMembers(n int) Option { return func(o *options) { o.members = n } }

// LeaseTTL sets slimd's lease TTL (default lab.DefaultLeaseTTL).
func LeaseTTL(d time.Duration) Option { return func(o *options) { o.leaseTTL = d } }

// Capabilities runs every slimd with only these capabilities (setpriv
// names, e.g. "bpf", "net_admin"), as a Kubernetes DaemonSet's
// securityContext grants them.
func Capabilities(caps ...string) Option { return func(o *options) { o.caps = caps } }

// Lab is a running lab owned by one test.
type Lab struct {
	// Config addresses the lab for the lab package's functions.
	Config lab.Config
	t      testing.TB
}

// New brings up a lab for t and tears it down when t ends. It skips under
// -short and without root.
func New(t testing.TB, opts ...Option) *Lab {
	t.Helper()
	o := options{hosts: 2}
	for _, f := range opts {
		f(&o)
	}
	Require(t)
	bin := Build(t, "slimd", "slim-cni", "slimctl")
	if o.caps != nil {
		bin = withCapabilities(t, bin, o.caps)
	}
	Lock(t)
	dir, err := os.MkdirTemp("", "slimlab-test-")
	if err != nil {
		t.Fatal(err)
	}
	cfg := lab.Config{
		StateDir:    dir,
		BinDir:      bin,
		Hosts:       o.hosts,
		IPv6:        o.ipv6,
		TLS:         o.tls,
		EtcdMembers: o.members,
		LeaseTTL:    o.leaseTTL,
		Progress:    logWriter{t},
	}
	Sweep(t)
	// Cleanup runs before the lock's release (cleanups run last-in first-out).
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
		defer cancel()
		if err := lab.Down(ctx, cfg); err != nil {
			t.Errorf("lab down: %v", err)
		}
		os.RemoveAll(dir)
	})
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	if err := lab.Up(ctx, cfg); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return &Lab{Config: cfg, t: t}
}

// withCapabilities is a directory of bin's binaries whose slimd runs with
// only caps in its bounding set: a root process then holds no others.
func withCapabilities(t testing.TB, bin string, caps []string) string {
	t.Helper()
	dir := t.TempDir()
	set := "-all"
	for _, c := range caps {
		set += ",+" + c
	}
	script := fmt.Sprintf("#!/bin/sh\nexec setpriv --bounding-set %s --inh-caps -all -- %s \"$@\"\n", set, filepath.Join(bin, "slimd"))
	if err := os.WriteFile(filepath.Join(dir, "slimd"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"slim-cni", "slimctl"} {
		if err := os.Symlink(filepath.Join(bin, b), filepath.Join(dir, b)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Run starts a container; the test fails if it cannot.
func (l *Lab) Run(spec lab.RunSpec) lab.Container {
	l.t.Helper()
	c, err := lab.Run(context.Background(), l.Config, spec)
	if err != nil {
		l.t.Fatalf("lab run %s on %s: %v", spec.Name, spec.Host, err)
	}
	return c
}

// Slimctl runs the lab's slimctl against host's slimd, as an operator
// would, and returns its combined output.
func (l *Lab) Slimctl(ctx context.Context, host string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(l.Config.BinDir, "slimctl"), append([]string{"--socket", lab.SocketPath(l.Config, host)}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Output runs command in target (a container or a host) and returns its
// stdout; the test fails if it cannot start or exits non-zero.
func (l *Lab) Output(ctx context.Context, target string, command ...string) string {
	l.t.Helper()
	out, err := lab.Output(ctx, l.Config, target, command...)
	if err != nil {
		l.t.Fatalf("%s: %s: %v", target, strings.Join(command, " "), err)
	}
	return string(out)
}

// Require skips t under -short or without root (failing under CI instead,
// where the lab must run).
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("lab test: builds a multi-host lab; skipped with -short")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("lab test needs root, and CI must run it")
		}
		t.Skip("lab test needs root (namespaces, cgroups)")
	}
}

// Lock takes the machine-wide lab lock for the rest of t.
func Lock(t testing.TB) {
	t.Helper()
	testenv.LockMachine(t)
}

// Sweep removes whatever lab exists, by name. Call it holding the lock.
func Sweep(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
	defer cancel()
	// Any state dir will do: Down finds namespaces and cgroups by name.
	if err := lab.Down(ctx, lab.Config{StateDir: filepath.Join(os.TempDir(), "slimlab-sweep")}); err != nil {
		t.Fatalf("sweep an earlier lab: %v", err)
	}
}

var (
	buildMu   sync.Mutex
	builtOnce = map[string]error{}
)

// Build builds the named commands of the module, each at most once per
// test binary, into one directory per checkout, and returns that
// directory. A name is a command (slimd: ./cmd/slimd) or a package path
// within the module (test/gohttp); the binary is named for its last
// element. Commands in static are built with CGO_ENABLED=0. Binaries are
// built aside and renamed into place, so a lab of another test binary
// that runs the old ones is not disturbed.
func Build(t testing.TB, names ...string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(os.TempDir(), "slimlab-bin-"+hex.EncodeToString(sum[:4]))
	buildMu.Lock()
	defer buildMu.Unlock()
	var todo []string
	for _, n := range names {
		if err, done := builtOnce[n]; done {
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		todo = append(todo, n)
	}
	if len(todo) == 0 {
		return dir
	}
	// One go build per linking mode.
	var errs []error
	for _, group := range [][]string{
		slices.DeleteFunc(slices.Clone(todo), func(n string) bool { return static[n] }),
		slices.DeleteFunc(slices.Clone(todo), func(n string) bool { return !static[n] }),
	} {
		if len(group) == 0 {
			continue
		}
		err := build(root, dir, group, static[group[0]])
		for _, n := range group {
			builtOnce[n] = err
		}
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return dir
}

// static are the commands that run inside lab containers, whose root
// filesystem may lack the host's libc: slimprobe.
var static = map[string]bool{"slimprobe": true}

// Probe builds cmd/slimprobe (static) once per test binary and returns
// its path.
func Probe(t testing.TB) string {
	t.Helper()
	return filepath.Join(Build(t, "slimprobe"), "slimprobe")
}

func build(root, dir string, names []string, static bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	args := []string{"build", "-o", tmp + "/"}
	for _, n := range names {
		if !strings.Contains(n, "/") {
			n = "cmd/" + n
		}
		args = append(args, "./"+n)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if static {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	for _, n := range names {
		bin := filepath.Base(n)
		if err := os.Rename(filepath.Join(tmp, bin), filepath.Join(dir, bin)); err != nil {
			return err
		}
	}
	return nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the module")
	}
	return filepath.Dir(gomod), nil
}

// Log returns a writer of progress lines into t's log (for
// lab.Options.Progress and the like).
func Log(t testing.TB) io.Writer { return logWriter{t} }

// logWriter sends progress lines to the test log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// HostHandle is a netlink handle in lab host's network namespace; the
// caller closes it.
func HostHandle(t testing.TB, host string) *netlink.Handle {
	t.Helper()
	hns, err := netns.GetFromPath(lab.NetnsPath(lab.HostNetns(host)))
	if err != nil {
		t.Fatal(err)
	}
	defer hns.Close()
	h, err := netlink.NewHandleAt(hns)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
