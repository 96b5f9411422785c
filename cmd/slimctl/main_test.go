package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/seccomp"
	"github.com/slimnet/slim/internal/testenv"
)

// fakeSlimd answers the read-only API with fixed data.
type fakeSlimd struct{ api.Backend }

var started = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func (fakeSlimd) Status(context.Context) (api.Status, error) {
	return api.Status{Host: api.Host{Name: "h1", UnderlayIP: netip.MustParseAddr("192.168.77.1"), VTEPMAC: "02:53:c0:a8:4d:01",
		Subnet4: netip.MustParsePrefix("10.244.0.0/24"), MTU: 1450, Started: started},
		Version: "test", EtcdEndpoints: []string{"http://192.168.77.1:2379"}, EmbeddedEtcd: true, StoreSynced: true,
		Peers: 1, KnownHosts: 2, Gateway4: netip.MustParseAddr("169.254.1.1"), VXLANDevice: "slim-vxlan", VNI: 1, VXLANPort: 4789}, nil
}

func (fakeSlimd) Hosts(context.Context) ([]api.Host, error) {
	return []api.Host{
		{Name: "h1", UnderlayIP: netip.MustParseAddr("192.168.77.1"), VTEPMAC: "02:53:c0:a8:4d:01", Subnet4: netip.MustParsePrefix("10.244.0.0/24"), MTU: 1450, Started: started},
		{Name: "h2", UnderlayIP: netip.MustParseAddr("192.168.77.2"), VTEPMAC: "02:53:c0:a8:4d:02", Subnet4: netip.MustParsePrefix("10.244.1.0/24"),
			Subnet6: netip.MustParsePrefix("fd5a:11:0:1::/64"), MTU: 1450, Started: started},
	}, nil
}

func (fakeSlimd) Endpoints(_ context.Context, host string) ([]api.Endpoint, error) {
	eps := []api.Endpoint{
		{ContainerID: strings.Repeat("ab", 32), IfName: "eth0", Host: "h1", IPv4: netip.MustParseAddr("10.244.0.1"),
			Labels: map[string]string{"tier": "front", "app": "web"}, Netns: "/run/netns/x", Created: started},
		{ContainerID: "db", IfName: "eth0", Host: "h2", IPv4: netip.MustParseAddr("10.244.1.1"),
			IPv6: netip.MustParseAddr("fd5a:11:0:1::1"), Netns: "/run/netns/y", Created: started},
	}
	var out []api.Endpoint
	for _, e := range eps {
		if host == "" || e.Host == host {
			out = append(out, e)
		}
	}
	return out, nil
}

func serve(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "slimd.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	srv := api.NewServer(fakeSlimd{}, slog.New(slog.DiscardHandler))
	srv.Handle("GET /v1/check", func(*http.Request) (any, error) {
		return []api.Check{{Name: "store", OK: true, Detail: "synced"}, {Name: "bpf lsm", Detail: "no LSM"},
			{Name: "fd keeper", Problem: true, Detail: "not running"}}, nil
	})
	go func() {
		defer close(done)
		_ = srv.Run(ctx, sock)
	}()
	t.Cleanup(func() { cancel(); <-done })
	for i := 0; ; i++ {
		if _, err := api.NewClient(sock).Status(context.Background()); err == nil {
			return sock
		} else if i > 200 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOutputs(t *testing.T) {
	sock := serve(t)
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"hosts.txt", []string{"hosts"}},
		{"hosts.json", []string{"hosts", "-o", "json"}},
		{"endpoints.txt", []string{"endpoints"}},
		{"endpoints-h2.json", []string{"endpoints", "--host", "h2", "-o", "json"}},
		{"status.json", []string{"status", "-o", "json"}},
		{"help.txt", []string{"--help"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := tc.args
			if tc.golden != "help.txt" {
				args = append(args, "--socket", sock)
			}
			code := run(context.Background(), args, &out, &errb)
			if code != exitOK {
				t.Fatalf("exit %d, stderr %s", code, errb.String())
			}
			if errb.Len() != 0 {
				t.Fatalf("stderr not empty: %s", errb.String())
			}
			testenv.Golden(t, tc.golden, out.Bytes())
		})
	}
}

func TestExitCodes(t *testing.T) {
	absent := filepath.Join(t.TempDir(), "absent.sock")
	badPolicy := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(badPolicy, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress: [{ports: [{port: 90, endPort: 80}]}]\n"), 0o644)
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		wantErr string
	}{
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"unknown flag", []string{"hosts", "--bogus"}, exitUsage, "unknown flag"},
		{"extra args", []string{"status", "extra"}, exitUsage, "unknown command"},
		{"bad output", []string{"hosts", "-o", "yaml", "--socket", serve(t)}, exitUsage, "unknown output format"},
		{"exclusive flags", []string{"bench", "--keep", "--reuse"}, exitUsage, "[keep reuse] were all set"},
		{"nothing runs with --from", []string{"bench", "--from", "report.json", "--quick"}, exitUsage, "[from quick] were all set"},
		{"slimd down", []string{"status", "--socket", absent}, exitFailed, "slimd unavailable"},
		// Policies are checked before slimd is asked.
		{"invalid policy", []string{"policy", "apply", "-f", badPolicy, "--socket", absent}, exitFailed, "spec.ingress[0].ports[0].endPort"},
		{"policy file missing", []string{"policy", "apply", "--socket", absent}, exitUsage, "filename"},
		{"policy rm without namespace", []string{"policy", "rm", "p", "--socket", absent}, exitUsage, "NAMESPACE/NAME"},
		{"explain bad port", []string{"policy", "explain", "10.0.0.1", "10.0.0.2", "http", "--socket", absent}, exitUsage, "PORT"},
		{"namespace label bad", []string{"namespace", "label", "y", "team", "--socket", absent}, exitUsage, "KEY=VALUE or KEY-"},
		{"lab run bad port", []string{"lab", "run", "h1", "c", "--port", "http", "--", "true"}, exitUsage, "NAME=PORT"},
		{"seccomp profile relative socket", []string{"seccomp-profile", "--agent-socket", "agent.sock"}, exitUsage, "want an absolute path"},
		{"check finds a problem", []string{"check", "-o", "json", "--socket", serve(t)}, exitProblem, "1 check(s) found a problem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d (stderr %s)", code, tc.code, errb.String())
			}
			if !strings.HasPrefix(errb.String(), "slimctl: ") || !strings.Contains(errb.String(), tc.wantErr) {
				t.Fatalf("stderr %q, want slimctl: ...%s", errb.String(), tc.wantErr)
			}
			if strings.Count(errb.String(), "\n") != 1 {
				t.Fatalf("error printed more than once: %q", errb.String())
			}
			if tc.code != exitProblem && out.Len() != 0 {
				t.Fatalf("stdout not empty: %q", out.String())
			}
			if tc.code == exitProblem && !strings.Contains(out.String(), `"problem": true`) {
				t.Fatalf("check output lacks the problem: %q", out.String())
			}
		})
	}
}

// seccomp-profile prints the profile, or installs it under its versioned
// name, the same bytes either way, and leaves older versions in place.
func TestSeccompProfile(t *testing.T) {
	var printed, errb bytes.Buffer
	if code := run(context.Background(), []string{"seccomp-profile", "--agent-socket", "/run/x/agent.sock"}, &printed, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var p specs.LinuxSeccomp
	if err := json.Unmarshal(printed.Bytes(), &p); err != nil || p.ListenerPath != "/run/x/agent.sock" {
		t.Fatalf("printed profile: listenerPath %q, %v", p.ListenerPath, err)
	}
	dir := filepath.Join(t.TempDir(), "seccomp", "slim")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "slim-v0.json"), []byte("{}"), 0o644)
	var out bytes.Buffer
	errb.Reset()
	if code := run(context.Background(), []string{"seccomp-profile", "--agent-socket", "/run/x/agent.sock", "--install", dir}, &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, seccomp.ProfileName()))
	if err != nil || !bytes.Equal(b, printed.Bytes()) {
		t.Errorf("installed profile differs from the printed one (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "slim-v0.json")); err != nil {
		t.Errorf("an older profile was removed: %v", err)
	}
}

// install-node writes the plugin, the profile and the configuration, and
// refuses, before writing anything, a configuration that is not Slim's or
// a profile that is not this version's.
func TestInstallNode(t *testing.T) {
	dir := t.TempDir()
	host := func(p string) string { return filepath.Join(dir, "host", p) }
	bin := filepath.Join(dir, "slim-cni")
	os.WriteFile(bin, []byte("plugin"), 0o755)
	conf := filepath.Join(dir, "conflist")
	os.WriteFile(conf, []byte(`{"cniVersion":"1.1.0","name":"slim","plugins":[{"type":"slim-cni","socket":"/run/slim/slimd.sock"}]}`), 0o644)
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte(`{"cniVersion":"1.1.0","name":"x","plugins":[{"type":"bridge"}]}`), 0o644)
	var profile bytes.Buffer
	run(context.Background(), []string{"seccomp-profile"}, &profile, io.Discard)
	good := filepath.Join(dir, "profile.json")
	os.WriteFile(good, profile.Bytes(), 0o644)
	stale := filepath.Join(dir, "stale.json")
	os.WriteFile(stale, bytes.Replace(profile.Bytes(), []byte("SCMP_ACT_NOTIFY"), []byte("SCMP_ACT_ALLOW"), 1), 0o644)
	args := func(conflist, profile string) []string {
		return []string{"install-node", "--cni-bin", bin, "--conflist", conflist, "--seccomp-profile", profile,
			"--cni-bin-dir", host("opt/cni/bin"), "--cni-conf-dir", host("etc/cni/net.d"), "--seccomp-dir", host("seccomp/slim")}
	}
	for _, tc := range []struct {
		name, conflist, profile, wantErr string
	}{
		{"not slim's configuration", other, good, "the first plugin must be slim-cni"},
		{"another version's profile", conf, stale, "is not this version's seccomp profile"},
		{"missing configuration", filepath.Join(dir, "absent"), good, "no such file"},
	} {
		var errb bytes.Buffer
		if code := run(context.Background(), args(tc.conflist, tc.profile), io.Discard, &errb); code != exitFailed || !strings.Contains(errb.String(), tc.wantErr) {
			t.Errorf("%s: exit %d, %q; want %q", tc.name, code, errb.String(), tc.wantErr)
		}
		if _, err := os.Stat(host("")); err == nil {
			t.Fatalf("%s: files written before the inputs were checked", tc.name)
		}
	}
	var errb bytes.Buffer
	if code := run(context.Background(), args(conf, good), io.Discard, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for p, want := range map[string][]byte{
		host("opt/cni/bin/slim-cni"): []byte("plugin"), host("etc/cni/net.d/10-slim.conflist"): nil,
		host("seccomp/slim/" + seccomp.ProfileName()): profile.Bytes(),
	} {
		b, err := os.ReadFile(p)
		if err != nil || (want != nil && !bytes.Equal(b, want)) {
			t.Errorf("%s: %v (%d bytes)", p, err, len(b))
		}
	}
	if st, err := os.Stat(host("opt/cni/bin/slim-cni")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("plugin mode: %v", err)
	}
}

// status --ready is a readiness probe: quiet and 0 when slimd answers
// with a synced store, 3 when it does not answer.
func TestStatusReady(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"status", "--ready", "--socket", serve(t)}, &out, &errb); code != exitOK || out.Len() != 0 {
		t.Errorf("synced slimd: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	errb.Reset()
	absent := filepath.Join(t.TempDir(), "absent.sock")
	if code := run(context.Background(), []string{"status", "--ready", "--socket", absent}, &out, &errb); code != exitProblem || !strings.Contains(errb.String(), "slimd unavailable") {
		t.Errorf("slimd away: exit %d, stderr %q", code, errb.String())
	}
}

func TestStoreContact(t *testing.T) {
	now := time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		ago  time.Duration
		ttl  int
		want string
	}{
		{2 * time.Second, 10, "2s ago"},
		{7 * time.Second, 10, "7s ago: UNREACHABLE (keepalives every 3s)"},
		{-1, 10, "never"},
	} {
		st := api.Status{LeaseTTL: tc.ttl}
		if tc.ago >= 0 {
			st.StoreContact = now.Add(-tc.ago)
		}
		if got := storeContact(st, now); got != tc.want {
			t.Errorf("%s ago, ttl %d: %q, want %q", tc.ago, tc.ttl, got, tc.want)
		}
	}
}
