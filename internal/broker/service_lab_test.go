//go:build linux

package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bench/wire"
	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/labtest"
	"github.com/slimnet/slim/internal/poll"
)

// TestServices: a ClusterIP service over three backends on two hosts,
// dialled from a client on a third host. Every connect is swapped onto
// one backend's host listener, picked at random (the spread within
// +/-15% of even over 3,000 connections); the client sees the service's
// IP, each backend the client's own; slimctl connections and the metrics
// name the service. A client on a backend's host takes the fast path too;
// an overlay-only client (TCP) and UDP go through the hosts' DNAT map. A
// backend that leaves a service by a label change has its connections cut
// where the service asks (slim.io/backend-removal: reset), kept
// otherwise; a backend removed gets no new connection a second later; a
// backend's policy and a service without backends refuse at once; bad
// manifests are refused with clear errors.
func TestServices(t *testing.T) {
	l := labtest.New(t, labtest.Hosts(3))
	dumpOnFailure(t, l.Config)
	probe := labtest.Probe(t)
	ctx := t.Context()
	const port = 7600
	var backends []lab.Container
	for i, h := range []string{"h1", "h1", "h2"} {
		// slimprobe serve on 7600 (TCP, reporting both ends' addresses),
		// and netserve saying the backend's name on 7601 (TCP) and 7653
		// (UDP).
		name := fmt.Sprintf("echo%d", i+1)
		backends = append(backends, l.Run(lab.RunSpec{Host: h, Name: name, Labels: map[string]string{"app": "echo"},
			Command: []string{"sh", "-c", fmt.Sprintf("%s netserve -tcp 7601 -udp 7653 -say %s & exec %s serve -addr 0.0.0.0:%d", probe, name, probe, port)}}))
	}
	cli := l.Run(lab.RunSpec{Host: "h3", Name: "cli", Command: []string{"sleep", "infinity"}})
	l.Run(lab.RunSpec{Host: "h3", Name: "ovl", NoSlim: true, Command: []string{"sleep", "infinity"}})
	for _, b := range backends {
		waitListener(t, l.Config, b.Host, b.IPv4, port, true)
	}
	apply := func(manifest string) (string, error) {
		f := filepath.Join(t.TempDir(), "svc.yaml")
		if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		return l.Slimctl(ctx, "h3", "service", "apply", "-f", f)
	}
	out, err := apply(`apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 7600}
  - {name: say, port: 81, targetPort: 7601}
  - {name: dns, port: 53, targetPort: 7653, protocol: UDP}
`)
	if err != nil {
		t.Fatalf("service apply: %v\n%s", err, out)
	}
	var vip netip.Addr
	if _, ip, ok := strings.Cut(strings.TrimSpace(out), "cluster IP "); ok {
		vip, _ = netip.ParseAddr(ip)
	}
	if !vip.IsValid() || !netip.MustParsePrefix("10.96.0.0/16").Contains(vip) {
		t.Fatalf("service apply said %q: want a cluster IP of 10.96.0.0/16", out)
	}
	// Every host sees the three backends listening.
	for _, h := range []string{"h1", "h2", "h3"} {
		waitBackends(t, l.Config, h, "echo", 3)
	}
	svc := netip.AddrPortFrom(vip, 80)

	swaps := metric(t, "h3", "slim_broker_swaps_total", `op="connect"`)
	viaSvc := metric(t, "h3", "slim_service_connections_total", `service="default/echo"`)
	const n = 3000
	res := parseResults(t, l.Output(ctx, "cli", probe, "connect", "-addr", svc.String(), "-conns", fmt.Sprint(n), "-parallel", "4", "-bytes", "1"))
	if len(res) != n {
		t.Fatalf("%d results, want %d", len(res), n)
	}
	per := map[netip.Addr]int{}
	for _, r := range res {
		if r.Client.Err != "" {
			t.Fatalf("connect: %s", r.Client.Err)
		}
		cl, cp := addrOf(t, r.Client.Local), addrOf(t, r.Client.Peer)
		sl, sp := addrOf(t, r.Server.Local), addrOf(t, r.Server.Peer)
		if cp != svc || cl.Addr() != cli.IPv4 {
			t.Fatalf("the client saw local %v peer %v; want %v:* and the service %v", cl, cp, cli.IPv4, svc)
		}
		if sp != cl || sl.Port() != port {
			t.Fatalf("a backend saw local %v peer %v; want its own address:%d and the client %v", sl, sp, port, cl)
		}
		per[sl.Addr()]++
	}
	t.Logf("3,000 connections to %v: per backend %v", svc, per)
	for _, b := range backends {
		if got := per[b.IPv4]; got < n/3*85/100 || got > n/3*115/100 {
			t.Errorf("backend %s (%v) took %d of %d connections, want %d +/-15%% (all: %v)", b.Name, b.IPv4, got, n, n/3, per)
		}
	}
	if d := metric(t, "h3", "slim_broker_swaps_total", `op="connect"`) - swaps; d != n {
		t.Errorf("%v of %d connects swapped, want all (none on the overlay)", d, n)
	}
	if d := metric(t, "h3", "slim_service_connections_total", `service="default/echo"`) - viaSvc; d != n {
		t.Errorf("slim_service_connections_total counted %v of %d connects", d, n)
	}
	if b := metric(t, "h1", "slim_service_backends", `port="80/TCP",service="default/echo",state="listening"`); b != 3 {
		t.Errorf("h1: slim_service_backends listening = %v, want 3", b)
	}
	// slimctl connections names the service a live connection came through.
	held := make(chan string, 1)
	go func() {
		out, _ := lab.Output(ctx, l.Config, "cli", probe, "hold", "-addr", svc.String(), "-until-closed", "3s")
		held <- string(out)
	}()
	poll.Until(t, 3*time.Second, func() error {
		out, err := l.Slimctl(ctx, "h3", "connections", "-o", "json")
		var cs []api.Connection
		if jerr := json.Unmarshal([]byte(out), &cs); err != nil || jerr != nil {
			return fmt.Errorf("connections: %s (%v, %v)", out, err, jerr)
		}
		for _, c := range cs {
			// The remote is the backend it went to; the service is named.
			if c.Role == "client" && c.State == "ESTABLISHED" && c.VirtualRemote.Port() == port && c.Service == "default/echo" {
				return nil
			}
		}
		return fmt.Errorf("no established client connection to a backend through service default/echo in %s", out)
	})
	<-held

	// A client on a backend's own host takes the same fast path (the
	// backends there over the host's own address).
	l.Run(lab.RunSpec{Host: "h1", Name: "cli1", Command: []string{"sleep", "infinity"}})
	swaps1 := metric(t, "h1", "slim_broker_swaps_total", `op="connect"`)
	same := map[netip.Addr]int{}
	for _, r := range parseResults(t, l.Output(ctx, "cli1", probe, "connect", "-addr", svc.String(), "-conns", "300", "-parallel", "4", "-bytes", "1")) {
		if r.Client.Err != "" || addrOf(t, r.Client.Peer) != svc {
			t.Fatalf("same-host client: err %q, peer %s; want the service %v", r.Client.Err, r.Client.Peer, svc)
		}
		same[addrOf(t, r.Server.Local).Addr()]++
	}
	if len(same) != 3 {
		t.Errorf("same-host client: 300 connections reached %v, want all three backends", same)
	}
	if d := metric(t, "h1", "slim_broker_swaps_total", `op="connect"`) - swaps1; d != 300 {
		t.Errorf("same-host client: %v of 300 connects swapped", d)
	}

	// Clients the fast path does not carry go through every host's DNAT
	// map: an overlay-only container over TCP, and UDP from any; both
	// reach every backend.
	askAll := func(from, target string) {
		t.Helper()
		poll.Until(t, 10*time.Second, func() error {
			out, err := lab.Output(ctx, l.Config, from, probe, "ask", "-n", "60", "-timeout", "500ms", target)
			var got map[string]int
			if jerr := json.Unmarshal(out, &got); err != nil || jerr != nil {
				return fmt.Errorf("ask: %s (%v, %v)", out, err, jerr)
			}
			if got["echo1"]+got["echo2"]+got["echo3"] != 60 || got["echo1"] == 0 || got["echo2"] == 0 || got["echo3"] == 0 {
				return fmt.Errorf("%s from %s: answers %v, want all 60 from the three backends", target, from, got)
			}
			return nil
		})
	}
	swaps = metric(t, "h3", "slim_broker_swaps_total", `op="connect"`)
	askAll("ovl", fmt.Sprintf("tcp:%s:81", vip))
	if d := metric(t, "h3", "slim_broker_swaps_total", `op="connect"`) - swaps; d != 0 {
		t.Errorf("%v connects of the overlay-only client swapped, want 0", d)
	}
	askAll("cli", fmt.Sprintf("udp:%s:53", vip))

	// A backend leaves two services (its labels change; it keeps running):
	// the live connection through the service that asks for it
	// (slim.io/backend-removal: reset) is cut within a second, the one
	// through the other is left alone.
	sole := backends[1]
	if _, err := l.Slimctl(ctx, "h1", "lab", "label", "--state-dir", l.Config.StateDir, sole.Name, "sole=yes"); err != nil {
		t.Fatal(err)
	}
	out, err = apply(`apiVersion: v1
kind: Service
metadata:
  name: sole-reset
  annotations: {slim.io/backend-removal: reset}
spec:
  selector: {sole: "yes"}
  ports: [{port: 80, targetPort: 7600}]
---
apiVersion: v1
kind: Service
metadata: {name: sole-keep}
spec:
  selector: {sole: "yes"}
  ports: [{port: 80, targetPort: 7600}]
`)
	if err != nil {
		t.Fatalf("service apply: %v\n%s", err, out)
	}
	var resetIP, keepIP string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		_, ip, _ := strings.Cut(line, "cluster IP ")
		switch {
		case strings.Contains(line, "sole-reset"):
			resetIP = ip
		case strings.Contains(line, "sole-keep"):
			keepIP = ip
		}
	}
	for _, n := range []string{"sole-reset", "sole-keep"} {
		waitBackends(t, l.Config, "h3", n, 1)
	}
	type heldRes struct {
		name string
		res  wire.HoldResult
	}
	helds := make(chan heldRes, 2)
	for name, ip := range map[string]string{"sole-reset": resetIP, "sole-keep": keepIP} {
		go func() {
			out, _ := lab.Output(ctx, l.Config, "cli", probe, "hold", "-addr", ip+":80", "-until-closed", "4s")
			var r wire.HoldResult
			json.Unmarshal(out, &r)
			helds <- heldRes{name, r}
		}()
	}
	// Both held (listed on h3), then the backend leaves both services.
	poll.Until(t, 3*time.Second, func() error {
		out, _ := l.Slimctl(ctx, "h3", "connections", "-o", "json")
		var cs []api.Connection
		json.Unmarshal([]byte(out), &cs)
		found := map[string]bool{}
		for _, c := range cs {
			if c.State == "ESTABLISHED" {
				found[c.Service] = true
			}
		}
		if !found["default/sole-reset"] || !found["default/sole-keep"] {
			return fmt.Errorf("held connections through both services not listed yet: %s", out)
		}
		return nil
	})
	if _, err := l.Slimctl(ctx, "h1", "lab", "label", "--state-dir", l.Config.StateDir, sole.Name, "sole-"); err != nil {
		t.Fatal(err)
	}
	left := time.Now()
	for range 2 {
		h := <-helds
		if h.name == "sole-reset" && time.Since(left) > time.Second {
			t.Errorf("%s: the connection was cut %v after the backend left, want within 1 s", h.name, time.Since(left))
		}
		switch {
		case h.res.Conns != 1:
			t.Errorf("%s: held %+v", h.name, h.res)
		case h.name == "sole-reset" && h.res.Cut != 1:
			t.Errorf("%s: the connection to the backend that left was not cut: %+v", h.name, h.res)
		case h.name == "sole-keep" && h.res.Cut != 0:
			t.Errorf("%s: the connection was cut, want it left alone: %+v", h.name, h.res)
		}
	}
	if n := metric(t, "h3", "slim_service_connections_reset_total", `service="default/sole-reset"`); n != 1 {
		t.Errorf("h3 counted %v connections reset for default/sole-reset, want 1", n)
	}

	// Scale one backend away: a second later, no new connection reaches it.
	gone := backends[2]
	if err := lab.Remove(ctx, l.Config, gone.Name); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	res = parseResults(t, l.Output(ctx, "cli", probe, "connect", "-addr", svc.String(), "-conns", "300", "-parallel", "4", "-bytes", "1"))
	for _, r := range res {
		if r.Client.Err != "" {
			t.Fatalf("connect after a backend left: %s", r.Client.Err)
		}
		if a := addrOf(t, r.Server.Local).Addr(); a == gone.IPv4 {
			t.Fatalf("a connection reached the removed backend %v a second after it went", gone.IPv4)
		}
	}

	// Policies judge the backend behind the service: ingress to the echo
	// pods only from app=friend refuses this client at once.
	pf := filepath.Join(t.TempDir(), "pol.yaml")
	os.WriteFile(pf, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: friends}\nspec:\n  podSelector: {matchLabels: {app: echo}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: friend}}}]\n"), 0o644)
	if out, err := l.Slimctl(ctx, "h3", "policy", "apply", "-f", pf); err != nil {
		t.Fatalf("policy apply: %v\n%s", err, out)
	}
	denied := metric(t, "h3", "slim_policy_denied_total", `policy="default/friends"`)
	refusedAtOnce(t, l, probe, "cli", svc.String(), "a backend's policy")
	// Refused by the client's host at connect (not only reset by the
	// backend's host-port filter).
	if d := metric(t, "h3", "slim_policy_denied_total", `policy="default/friends"`) - denied; d != 1 {
		t.Errorf("h3 counted %v denials by default/friends, want 1: the connect was not judged against the backend", d)
	}
	if out, err := l.Slimctl(ctx, "h3", "policy", "rm", "default/friends"); err != nil {
		t.Fatalf("policy rm: %v\n%s", err, out)
	}

	// A service whose selector matches nothing refuses connects at once.
	out, err = apply("apiVersion: v1\nkind: Service\nmetadata: {name: nobody}\nspec:\n  selector: {app: nobody}\n  ports: [{port: 80}]\n")
	if err != nil {
		t.Fatalf("service apply: %v\n%s", err, out)
	}
	_, ip, _ := strings.Cut(strings.TrimSpace(out), "cluster IP ")
	refusedAtOnce(t, l, probe, "cli", ip+":80", "a service without backends")
	// An overlay-only client meets the hosts' packet filters: a reset
	// where its host routes the service CIDR (TestServiceDNAT), and here,
	// where the lab's hosts have no route for it, "network unreachable";
	// at once either way.
	refusedAtOnce(t, l, probe, "ovl", ip+":80", "a service without backends, from an overlay-only client", "network is unreachable")

	// Bad manifests: each a clear error, nothing changed.
	for _, tc := range []struct{ manifest, want string }{
		{"apiVersion: v1\nkind: Service\nmetadata: {name: bad\nspec: {}\n", "did not find expected"},
		{"apiVersion: v1\nkind: Service\nmetadata: {name: np}\nspec:\n  type: NodePort\n  selector: {app: echo}\n  ports: [{port: 80}]\n", "only ClusterIP"},
		{"apiVersion: v1\nkind: Service\nmetadata: {name: out}\nspec:\n  clusterIP: 10.97.0.1\n  selector: {app: echo}\n  ports: [{port: 80}]\n", "outside the service CIDR"},
		{fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: dup}\nspec:\n  clusterIP: %s\n  selector: {app: echo}\n  ports: [{port: 80}]\n", vip), "allocated to service default/echo"},
	} {
		out, err := apply(tc.manifest)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("apply %q: %v\n%s\nwant an error with %q", tc.manifest, err, out, tc.want)
		}
	}
	out, _ = l.Slimctl(ctx, "h1", "service", "ls")
	if strings.Contains(out, "dup") || strings.Contains(out, "out") || !strings.Contains(out, vip.String()) {
		t.Errorf("service ls after the refused applies:\n%s", out)
	}
	if out, err := l.Slimctl(ctx, "h1", "service", "rm", "default/echo", "default/nobody"); err != nil {
		t.Errorf("service rm: %v\n%s", err, out)
	}
}

// refusedAtOnce checks that a connect from container from to addr fails with
// ECONNREFUSED within a second.
func refusedAtOnce(t *testing.T, l *labtest.Lab, probe, from, addr, what string, orErr ...string) {
	t.Helper()
	start := time.Now()
	out, _ := lab.Output(t.Context(), l.Config, from, probe, "connect", "-summary", "-addr", addr, "-bytes", "1", "-timeout", "5s")
	var sum wire.ConnectSummary
	json.Unmarshal(out, &sum)
	wanted := slices.ContainsFunc(append(orErr, "connection refused"), func(e string) bool { return strings.Contains(sum.FirstError, e) })
	if took := time.Since(start); sum.Failed != 1 || !wanted || took > time.Second {
		t.Errorf("connect to %s (%s): %s after %v; want connection refused at once", addr, what, out, took)
	}
}

// waitBackends waits until host's slimd sees want backends of service
// name listening.
func waitBackends(t *testing.T, cfg lab.Config, host, name string, want int) {
	t.Helper()
	c := api.NewClient(lab.SocketPath(cfg, host))
	poll.Until(t, 15*time.Second, func() error {
		ss, err := c.Services(context.Background())
		if err != nil {
			return err
		}
		for _, s := range ss {
			if s.Name == name && len(s.Ports) > 0 && s.Ports[0].Listening == want && s.Ports[0].Backends == want {
				return nil
			}
		}
		return fmt.Errorf("%s: service %s without %d listening backends (%+v)", host, name, want, ss)
	})
}
