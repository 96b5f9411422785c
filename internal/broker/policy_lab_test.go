//go:build linux

package broker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bench/wire"
	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/labtest"
	"github.com/slimnet/slim/internal/poll"
)

// TestPolicy applies Kubernetes NetworkPolicies with slimctl and checks
// them on both paths: at connect() on the fast path (an allowed client is
// swapped, a denied one gets ECONNREFUSED at once) and in the hosts'
// packet filters for overlay clients (a denied SYN is dropped); namespace
// labels, named ports, explain, removal and a refused invalid policy.
func TestPolicy(t *testing.T) {
	l := labtest.New(t, labtest.Hosts(2))
	dumpOnFailure(t, l.Config)
	probe := labtest.Probe(t)
	ctx := t.Context()
	const port = 7400
	web := l.Run(lab.RunSpec{Host: "h1", Name: "web", Namespace: "x", Labels: map[string]string{"app": "web"},
		Ports: []api.NamedPort{{Name: "http", Port: port, Protocol: "TCP"}}, Command: []string{probe, "serve", "-addr", "0.0.0.0:7400"}})
	a := l.Run(lab.RunSpec{Host: "h2", Name: "a", Namespace: "x", Labels: map[string]string{"app": "client"}, Command: []string{"sleep", "infinity"}})
	b := l.Run(lab.RunSpec{Host: "h2", Name: "b", Namespace: "y", Labels: map[string]string{"app": "client"}, Command: []string{"sleep", "infinity"}})
	c := l.Run(lab.RunSpec{Host: "h1", Name: "c", Namespace: "x", Labels: map[string]string{"app": "other"}, Command: []string{"sleep", "infinity"}})
	// Overlay-only clients: their connects are left to the kernel, so
	// only the packet filters stand between them and web.
	oa := l.Run(lab.RunSpec{Host: "h2", Name: "oa", Namespace: "x", Labels: map[string]string{"app": "client"}, NoSlim: true, Command: []string{"sleep", "infinity"}})
	ob := l.Run(lab.RunSpec{Host: "h2", Name: "ob", Namespace: "y", Labels: map[string]string{"app": "client"}, NoSlim: true, Command: []string{"sleep", "infinity"}})
	waitListener(t, l.Config, "h1", web.IPv4, port, true)
	dst := netip.AddrPortFrom(web.IPv4, port).String()

	ctl := func(host string, args ...string) (string, error) { return l.Slimctl(ctx, host, args...) }
	apply := func(yaml string) {
		t.Helper()
		f := filepath.Join(t.TempDir(), "policy.yaml")
		if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := ctl("h1", "policy", "apply", "-f", f); err != nil {
			t.Fatalf("policy apply: %v\n%s", err, out)
		}
	}
	swaps := func(host string) float64 { return metric(t, host, "slim_broker_swaps_total", `op="connect"`) }
	// reach connects from container from to web and says whether it
	// worked. A fast-path client must be swapped, or refused at once; an
	// overlay client's denied SYN is dropped (a timeout).
	reach := func(from lab.Container) bool {
		t.Helper()
		s0 := swaps(from.Host)
		start := time.Now()
		out, _ := lab.Output(ctx, l.Config, from.Name, probe, "connect", "-addr", dst, "-bytes", "1000", "-timeout", "1s")
		rs := parseResults(t, string(out))
		if len(rs) != 1 {
			t.Fatalf("%s: probe said %q", from.Name, out)
		}
		if e := rs[0].Client.Err; e != "" {
			switch {
			case from.NoSlim && !strings.Contains(e, "timeout") && !strings.Contains(e, "connection abort"):
				// Dropped; or cut by a revocation pass that ran while
				// it was connecting.
				t.Errorf("%s -> web: %s; want a timeout (dropped) or an abort (revoked)", from.Name, e)
			case !from.NoSlim && !strings.Contains(e, "connection refused"):
				t.Errorf("%s -> web: %s; want connection refused", from.Name, e)
			case !from.NoSlim && time.Since(start) > time.Second:
				t.Errorf("%s -> web: refused after %v; want at once", from.Name, time.Since(start))
			}
			return false
		}
		checkVirtual(t, rs[0], from.IPv4, web.IPv4, port)
		if swapped := swaps(from.Host) > s0; swapped == from.NoSlim {
			t.Errorf("%s -> web: swapped %v, want %v", from.Name, swapped, !from.NoSlim)
		}
		return true
	}
	// settle waits until container from's connect to web gives want:
	// every host applies a change on its own (the client's host at
	// connect, web's host in its filter).
	settle := func(from lab.Container, want bool) {
		t.Helper()
		poll.Until(t, 5*time.Second, func() error {
			if reach(from) != want {
				return fmt.Errorf("%s -> web: still not reached=%v", from.Name, want)
			}
			return nil
		})
	}
	matrix := func(want map[string]bool) {
		t.Helper()
		for _, from := range []lab.Container{a, b, c, oa, ob} {
			if got := reach(from); got != want[from.Name] {
				t.Errorf("%s -> web: reached %v, want %v", from.Name, got, want[from.Name])
			}
		}
	}

	matrix(map[string]bool{"a": true, "b": true, "c": true, "oa": true, "ob": true})

	// The host-port surface: web's host listener, on h1's underlay
	// address, takes connections only from fast-path host sockets, whose
	// source ports come from the port blocks.
	var hostDst string
	ls, err := api.NewClient(lab.SocketPath(l.Config, "h1")).Listeners(ctx, "h1")
	for _, x := range ls {
		if x.VIP == web.IPv4 && x.Port == port {
			hostDst = netip.AddrPortFrom(x.HostIP, x.HostPort).String()
		}
	}
	if hostDst == "" {
		t.Fatalf("web's listener not found: %v %v", ls, err)
	}
	eps, err := api.NewClient(lab.SocketPath(l.Config, "h2")).Endpoints(ctx, "h2")
	var bBlock uint16
	for _, ep := range eps {
		if ep.ContainerID == b.ContainerID && len(ep.PortBlocks) > 0 {
			bBlock = ep.PortBlocks[0].Start
		}
	}
	if bBlock == 0 {
		t.Fatalf("b's port block not found: %v %v", eps, err)
	}
	// refusedDirect: a process of host h2, outside any container,
	// connecting straight to web's host port from source port sport
	// (0: an ordinary one) gets a reset.
	refusedDirect := func(what string, sport uint16) {
		t.Helper()
		out, _ := lab.Output(ctx, l.Config, "h2", probe, "connect", "-addr", hostDst, "-bytes", "10", "-timeout", "1s", "-sport", fmt.Sprint(sport))
		if rs := parseResults(t, string(out)); len(rs) != 1 || !strings.Contains(rs[0].Client.Err, "connection refused") {
			t.Errorf("%s: a host process connecting straight to web's host port %s: %s; want connection refused", what, hostDst, out)
		}
	}
	refusedDirect("no policy, ordinary source port", 0)
	// A host process borrowing a port of a container's block (b's, on
	// its own host) would pass for b: refused on its own host.
	refusedDirect("no policy, a port of b's block", bBlock+11)

	// Live connections from four clients, held across the policy change:
	// those it denies (b on the fast path, ob on the overlay) are cut
	// within a second, the others left alone.
	type held struct {
		name string
		res  wire.HoldResult
		done time.Time
	}
	holders := []lab.Container{a, b, oa, ob}
	holds := make(chan held, len(holders))
	for _, from := range holders {
		go func() {
			out, _ := lab.Output(ctx, l.Config, from.Name, probe, "hold", "-addr", dst, "-until-closed", "5s")
			h := held{name: from.Name, done: time.Now()}
			if err := json.Unmarshal(out, &h.res); err != nil {
				h.res.FirstError = fmt.Sprintf("hold said %q", out)
			}
			holds <- h
		}()
	}
	poll.Until(t, 5*time.Second, func() error {
		conns, err := api.NewClient(lab.SocketPath(l.Config, "h2")).Connections(ctx)
		if err != nil {
			return err
		}
		for _, from := range holders {
			n := 0
			if from.NoSlim {
				out, _ := lab.Output(ctx, l.Config, from.Name, "ss", "-Htn", "state", "established")
				n = strings.Count(string(out), "\n")
			} else {
				for _, c := range conns {
					if c.Container == from.ContainerID && c.Role == "client" && c.State == "ESTABLISHED" {
						n++
					}
				}
			}
			if n == 0 {
				return fmt.Errorf("%s holds no connection yet", from.Name)
			}
		}
		return nil
	})

	// Ingress to web only from app=client pods of its namespace, on the
	// named port.
	apply(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-clients, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
`)
	applied := time.Now()
	denied0 := metric(t, "h2", "slim_policy_denied_total", `direction="ingress"`)
	settle(ob, false)
	matrix(map[string]bool{"a": true, "b": false, "c": false, "oa": true, "ob": false})
	if metric(t, "h2", "slim_policy_denied_total", `direction="ingress",policy="x/web-from-clients"`) <= denied0 {
		t.Error("slim_policy_denied_total did not count b's denied connect")
	}
	// b's port block names b, which web's policy denies: a port of it
	// does not open web's host port either.
	refusedDirect("isolated web, source port of b's block", bBlock+9)
	refusedDirect("isolated web, ordinary source port", 0)

	if out, err := ctl("h2", "connections", "--denied"); err != nil || !strings.Contains(out, b.IPv4.String()) || !strings.Contains(out, "x/web-from-clients") {
		t.Errorf("connections --denied on h2: %v\n%s", err, out)
	}
	out, err := ctl("h2", "policy", "explain", a.IPv4.String(), web.IPv4.String(), "7400")
	if err != nil || !strings.Contains(out, "x/web-from-clients ingress[0]") {
		t.Errorf("explain a -> web: %v\n%s", err, out)
	}
	out, err = ctl("h2", "policy", "explain", b.IPv4.String(), web.IPv4.String(), "7400")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, "x/web-from-clients") {
		t.Errorf("explain b -> web: %v (want exit 1)\n%s", err, out)
	}

	for range holders {
		h := <-holds
		wantCut := h.name == "b" || h.name == "ob"
		switch {
		case h.res.Conns != 1:
			t.Errorf("%s held no connection: %+v", h.name, h.res)
		case wantCut && h.res.Cut != 1:
			t.Errorf("%s's connection, which the policy denies, was not cut: %+v", h.name, h.res)
		case wantCut && h.done.Sub(applied) > time.Second:
			t.Errorf("%s's connection cut %v after the policy was applied; want within 1s", h.name, h.done.Sub(applied))
		case !wantCut && h.res.Cut != 0:
			t.Errorf("%s's connection, which the policy allows, was cut: %+v", h.name, h.res)
		}
		t.Logf("%s: %+v, returned %v after the apply", h.name, h.res, h.done.Sub(applied).Round(time.Millisecond))
	}
	// Whichever end's host cuts first; the other finds it gone.
	if metric(t, "h1", "slim_policy_revoked_total", `path="fastpath"`)+metric(t, "h2", "slim_policy_revoked_total", `path="fastpath"`) < 1 {
		t.Error("no host counted a revoked fast-path connection")
	}

	// A second policy allows namespaces labelled team=blue; labelling y
	// lets b in (a union of allows), c stays out.
	apply(`{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
 "metadata": {"name": "web-from-blue", "namespace": "x"},
 "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}}]}`)
	if out, err := ctl("h1", "namespace", "label", "y", "team=blue"); err != nil {
		t.Fatalf("namespace label: %v\n%s", err, out)
	}
	settle(b, true)
	settle(ob, true)
	matrix(map[string]bool{"a": true, "b": true, "c": false, "oa": true, "ob": true})

	// An invalid policy is refused whole, and changes nothing.
	f := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(f, []byte(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: x}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 90, endPort: 80}]}]
`), 0o644)
	if out, err := ctl("h1", "policy", "apply", "-f", f); err == nil || !strings.Contains(out, "endPort") {
		t.Errorf("invalid policy: %v\n%s", err, out)
	}
	if out, _ := ctl("h1", "policy", "ls"); strings.Contains(out, "bad") || !strings.Contains(out, "web-from-blue") {
		t.Errorf("policy ls after a refused apply:\n%s", out)
	}

	// Removing both policies opens web again.
	if out, err := ctl("h1", "policy", "rm", "x/web-from-clients", "x/web-from-blue"); err != nil {
		t.Fatalf("policy rm: %v\n%s", err, out)
	}
	settle(c, true)
	settle(ob, true)
	matrix(map[string]bool{"a": true, "b": true, "c": true, "oa": true, "ob": true})
}
