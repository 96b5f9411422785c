//go:build linux

package broker_test

// The compatibility matrix (docs/compatibility.md): servers users run, each
// in its own container on h1, and clients users run, each in its own
// container on h2. Every client talks to every server it can, and every
// such pair must be swapped onto the fast path, not merely connected:
//
//   - the server's listen() was swapped: h1's swaps{op="listen"} rose when
//     it started and its listener is published (and still is for each pair);
//   - the client's connects were swapped: h2's swaps{op="connect"} rose by at
//     least the connections the client makes, and h2's
//     fallbacks{op="connect"} did not rise (an AF_UNIX connect, reason
//     not_inet, cannot ride the overlay and is not counted);
//   - the overlay carried (almost) nothing: the interfaces an overlay
//     connection between the two containers crosses (both hosts' vxlan
//     devices, the client's and the server's host veths) moved less than
//     1% of the exchange's bytes plus a little background (IPv6 neighbour
//     discovery of a just-started container).
//
// Each exchange moves at least 256 KiB, so a pair on the overlay shows
// about three times that on those interfaces. The overlay-control
// subtests run an exchange that rides the overlay and check that the
// checks catch it: from an unsupervised client (no swaps, overlay bytes)
// and, with the fast-path switch off, from a supervised one (no swaps,
// fallbacks, overlay bytes).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/apps"
	"github.com/slimnet/slim/internal/lab/labtest"
	"github.com/slimnet/slim/internal/poll"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const (
	// compatDataSize is what every exchange moves at least: enough that
	// a connection on the overlay shows far above the background.
	compatDataSize = 256 << 10
	// overlayBackground is what the overlay interfaces on the path may
	// carry during an exchange besides 1% of its bytes: IPv6 router
	// solicitations, MLD reports and DAD of a just-started container's
	// veth (a few hundred bytes). One TCP connection on the overlay shows
	// more in its handshake alone (each packet counts on four
	// interfaces).
	overlayBackground = 2048
	// clientTimeout bounds one client run (they take well under a second).
	clientTimeout = 30 * time.Second
	// serverReadyTimeout bounds a server's start after its listener is
	// published (PostgreSQL's startup).
	serverReadyTimeout = 30 * time.Second
)

// tool is a program the test runs and the Debian package it comes in
// (scripts/deps.sh installs them).
type tool struct{ bin, pkg string }

// missingTools says which of tools are not installed, or "".
func missingTools(tools []tool) string {
	var miss []string
	for _, tl := range tools {
		if strings.HasPrefix(tl.bin, "/") {
			if m, _ := filepath.Glob(tl.bin); len(m) > 0 {
				continue
			}
		} else if _, err := exec.LookPath(tl.bin); err == nil {
			continue
		}
		miss = append(miss, fmt.Sprintf("%s (Debian package %s)", tl.bin, tl.pkg))
	}
	if len(miss) == 0 {
		return ""
	}
	return "not installed: " + strings.Join(miss, ", ") + "; scripts/deps.sh installs it"
}

func TestCompatMissingTools(t *testing.T) {
	if m := missingTools([]tool{{"sh", "dash"}, {"/bin/s[h]", "dash"}}); m != "" {
		t.Errorf("sh and /bin/s[h]: %q", m)
	}
	m := missingTools([]tool{{"sh", "dash"}, {"slim-no-such-program", "slim-a"}, {"/no/such/*/bin", "slim-b"}})
	want := "not installed: slim-no-such-program (Debian package slim-a), /no/such/*/bin (Debian package slim-b); scripts/deps.sh installs it"
	if m != want {
		t.Errorf("got %q, want %q", m, want)
	}
}

// requireTools fails t under CI if a tool is missing, and skips it,
// saying which, otherwise.
func requireTools(t *testing.T, tools []tool) {
	t.Helper()
	if m := missingTools(tools); m != "" {
		if os.Getenv("CI") != "" {
			t.Fatal(m)
		}
		t.Skip(m)
	}
}

// compatEnv is what the servers and clients share: a directory the
// postgres user can reach, with the data every exchange moves.
type compatEnv struct {
	dir  string
	data []byte // www/data.bin, the payload
	// pgBin holds PostgreSQL's server binaries.
	pgBin string
}

func (e *compatEnv) path(elem ...string) string {
	return filepath.Join(append([]string{e.dir}, elem...)...)
}

// compatServer is a server program and how to start it in a container.
type compatServer struct {
	name  string // container name, s-<name>
	label string // the docs' column
	proto string // what its clients speak
	port  uint16
	need  []tool
	// setup prepares its files before the start (runs once).
	setup func(t *testing.T, l *labtest.Lab, e *compatEnv)
	cmd   func(e *compatEnv) []string
	// ready waits, after the listener is published, until the server
	// serves; nil: published is ready.
	ready func(t *testing.T, l *labtest.Lab, e *compatEnv, c lab.Container)
}

// compatClient is a client program: the command of one exchange and the
// check of what it printed.
type compatClient struct {
	name  string // container name, c-<name>
	label string // the docs' row
	proto string
	need  []tool
	// conns is how many TCP connections one exchange makes.
	conns int
	cmd   func(e *compatEnv, dst netip.AddrPort) []string
	// check returns how many bytes the exchange moved, or why its
	// output is wrong.
	check func(e *compatEnv, out []byte) (uint64, error)
}

// noProxy runs a client with no proxy from the environment: the exchange
// must go to the server.
var noProxy = []string{"env", "-u", "http_proxy", "-u", "HTTP_PROXY", "-u", "https_proxy", "-u", "HTTPS_PROXY",
	"-u", "all_proxy", "-u", "ALL_PROXY"}

func httpURL(dst netip.AddrPort) string { return "http://" + dst.String() + "/data.bin" }

// sameAs checks that out is want.
func sameAs(want []byte, out []byte) (uint64, error) {
	if !bytes.Equal(out, want) {
		return 0, fmt.Errorf("got %d bytes (%q...), want the %d-byte payload", len(out), head(out), len(want))
	}
	return uint64(len(want)), nil
}

func head(b []byte) []byte { return b[:min(len(b), 80)] }

func compatServers(goHTTP string) []compatServer {
	return []compatServer{
		{name: "go", label: "Go net/http", proto: "http", port: 8080,
			cmd: func(e *compatEnv) []string { return []string{goHTTP, "serve", "-addr", ":8080", "-dir", e.path("www")} }},
		{name: "python", label: "Python http.server", proto: "http", port: 8000, need: []tool{{"python3", "python3"}},
			cmd: func(e *compatEnv) []string {
				return []string{"python3", "-m", "http.server", "8000", "--directory", e.path("www")}
			}},
		{name: "node", label: "Node http", proto: "http", port: 3000, need: []tool{{"node", "nodejs"}},
			cmd: func(e *compatEnv) []string {
				return []string{"node", "-e", `const b = require("fs").readFileSync(process.argv[1]);
require("http").createServer((req, res) => res.end(b)).listen(3000);`, e.path("www", "data.bin")}
			}},
		{name: "nginx", label: "nginx", proto: "http", port: 8081, need: []tool{{"nginx", "nginx-light"}},
			setup: func(t *testing.T, _ *labtest.Lab, e *compatEnv) {
				if err := compatNginx(e).Write(); err != nil {
					t.Fatal(err)
				}
			},
			cmd: func(e *compatEnv) []string { return compatNginx(e).Command() }},
		{name: "redis", label: "Redis", proto: "redis", port: 6379, need: []tool{{"redis-server", "redis-server"}},
			cmd: func(e *compatEnv) []string {
				return []string{"redis-server", "--port", "6379", "--save", "", "--appendonly", "no", "--protected-mode", "no",
					"--dir", e.dir, "--logfile", ""}
			}},
		{name: "postgres", label: "PostgreSQL", proto: "postgres", port: 5432,
			need:  []tool{{"/usr/lib/postgresql/*/bin/postgres", "postgresql"}, {"setpriv", "util-linux"}},
			setup: initdb,
			cmd: func(e *compatEnv) []string {
				data := e.path("pg")
				return apps.AsPostgres(filepath.Join(e.pgBin, "postgres"), "-D", data, "-p", "5432", "-k", data,
					"-c", "listen_addresses=*", "-c", "fsync=off", "-c", "synchronous_commit=off")
			},
			ready: postgresReady},
		{name: "memcached", label: "memcached", proto: "memcached", port: 11211, need: []tool{{"memcached", "memcached"}},
			cmd: func(*compatEnv) []string {
				return []string{"memcached", "-u", "nobody", "-p", "11211", "-U", "0", "-m", "64"}
			}},
		{name: "socat", label: "socat (echo)", proto: "echo", port: 7000, need: []tool{{"socat", "socat"}},
			cmd: func(*compatEnv) []string { return []string{"socat", "TCP-LISTEN:7000,fork,reuseaddr", "EXEC:cat"} }},
		{name: "iperf3", label: "iperf3 -s", proto: "iperf3", port: 5201, need: []tool{{"iperf3", "iperf3"}},
			cmd: func(*compatEnv) []string { return []string{"iperf3", "-s", "-p", "5201"} }},
	}
}

func compatClients(goHTTP string) []compatClient {
	httpCheck := func(e *compatEnv, out []byte) (uint64, error) { return sameAs(e.data, out) }
	return []compatClient{
		{name: "curl", label: "curl", proto: "http", conns: 1, need: []tool{{"curl", "curl"}}, check: httpCheck,
			cmd: func(_ *compatEnv, dst netip.AddrPort) []string {
				return []string{"curl", "-sS", "--fail", "--max-time", "20", httpURL(dst)}
			}},
		{name: "wget", label: "wget", proto: "http", conns: 1, need: []tool{{"wget", "wget"}}, check: httpCheck,
			cmd: func(_ *compatEnv, dst netip.AddrPort) []string {
				return []string{"wget", "-q", "-O", "-", "-T", "20", "-t", "1", httpURL(dst)}
			}},
		{name: "python", label: "Python urllib", proto: "http", conns: 1, need: []tool{{"python3", "python3"}}, check: httpCheck,
			cmd: func(_ *compatEnv, dst netip.AddrPort) []string {
				return []string{"python3", "-c", "import sys, urllib.request\n" +
					"sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=20).read())", httpURL(dst)}
			}},
		{name: "node", label: "Node http.get", proto: "http", conns: 1, need: []tool{{"node", "nodejs"}}, check: httpCheck,
			cmd: func(_ *compatEnv, dst netip.AddrPort) []string {
				return []string{"node", "-e", `require("http").get(process.argv[1], res => {
	if (res.statusCode !== 200) { console.error("status", res.statusCode); process.exit(1); }
	res.pipe(process.stdout);
}).on("error", err => { console.error(err.message); process.exit(1); });`, httpURL(dst)}
			}},
		{name: "go", label: "Go net/http", proto: "http", conns: 1, check: httpCheck,
			cmd: func(_ *compatEnv, dst netip.AddrPort) []string { return []string{goHTTP, "get", httpURL(dst)} }},
		{name: "redis-cli", label: "redis-cli", proto: "redis", conns: 2, need: []tool{{"redis-cli", "redis-tools"}},
			// SET the payload from stdin, GET it back: two runs, two
			// connections.
			cmd: func(e *compatEnv, dst netip.AddrPort) []string {
				cli := fmt.Sprintf("redis-cli -h %s -p %d", dst.Addr(), dst.Port())
				return []string{"sh", "-c", fmt.Sprintf("%s -x SET compat < %s && %s GET compat", cli, e.path("www", "data.bin"), cli)}
			},
			check: func(e *compatEnv, out []byte) (uint64, error) {
				n, err := sameAs(append([]byte("OK\n"), append(slices.Clone(e.data), '\n')...), out)
				return 2 * n, err
			}},
		{name: "psql", label: "psql", proto: "postgres", conns: 1, need: []tool{{"psql", "postgresql"}},
			cmd: func(_ *compatEnv, dst netip.AddrPort) []string {
				return []string{"psql", "-X", "-q", "-t", "-A", "-h", dst.Addr().String(), "-p", strconv.Itoa(int(dst.Port())),
					"-U", "postgres", "-d", "postgres", "-c", fmt.Sprintf("select repeat('slim', %d)", compatDataSize/4)}
			},
			check: func(_ *compatEnv, out []byte) (uint64, error) {
				return sameAs([]byte(strings.Repeat("slim", compatDataSize/4)+"\n"), out)
			}},
		{name: "memcache", label: "socat (memcached protocol)", proto: "memcached", conns: 1, need: []tool{{"socat", "socat"}},
			// set, get and quit, after which memcached closes.
			cmd: func(e *compatEnv, dst netip.AddrPort) []string {
				return []string{"sh", "-c", fmt.Sprintf("socat -t 20 - TCP:%s < %s", dst, e.path("memcached.req"))}
			},
			check: func(e *compatEnv, out []byte) (uint64, error) {
				want := fmt.Appendf(nil, "STORED\r\nVALUE compat 0 %d\r\n%s\r\nEND\r\n", len(e.data), e.data)
				n, err := sameAs(want, out)
				return 2 * n, err
			}},
		{name: "socat", label: "socat", proto: "echo", conns: 1, need: []tool{{"socat", "socat"}},
			cmd: func(e *compatEnv, dst netip.AddrPort) []string {
				return []string{"sh", "-c", fmt.Sprintf("socat -t 20 - TCP:%s < %s", dst, e.path("www", "data.bin"))}
			},
			check: func(e *compatEnv, out []byte) (uint64, error) {
				n, err := sameAs(e.data, out)
				return 2 * n, err
			}},
		{name: "iperf3", label: "iperf3 -c", proto: "iperf3", conns: 2, need: []tool{{"iperf3", "iperf3"}},
			// A control connection and one data stream.
			cmd: func(_ *compatEnv, dst netip.AddrPort) []string {
				return []string{"iperf3", "-c", dst.Addr().String(), "-p", strconv.Itoa(int(dst.Port())), "-t", "1", "-J"}
			},
			check: func(_ *compatEnv, out []byte) (uint64, error) {
				var r struct {
					End struct {
						SumReceived struct {
							Bytes uint64 `json:"bytes"`
						} `json:"sum_received"`
					} `json:"end"`
				}
				if err := json.Unmarshal(out, &r); err != nil {
					return 0, fmt.Errorf("iperf3 -J: %v (%q...)", err, head(out))
				}
				if r.End.SumReceived.Bytes < compatDataSize {
					return 0, fmt.Errorf("iperf3 moved %d bytes in 1s", r.End.SumReceived.Bytes)
				}
				return r.End.SumReceived.Bytes, nil
			}},
	}
}

// TestCompat runs the compatibility matrix; see the top of this file.
func TestCompat(t *testing.T) {
	l := labtest.New(t, labtest.Hosts(2))
	dumpOnFailure(t, l.Config)
	e := newCompatEnv(t)
	// Built as users build Go programs: go build with the default
	// settings (the module's go line is >= 1.24, so its listeners are
	// MPTCP).
	goHTTP := filepath.Join(labtest.Build(t, "test/gohttp"), "gohttp")
	servers, clients := compatServers(goHTTP), compatClients(goHTTP)

	// Every server starts once, in its own container on h1.
	serving := map[string]lab.Container{}
	for _, s := range servers {
		t.Run("serve/"+s.name, func(t *testing.T) {
			requireTools(t, s.need)
			if s.setup != nil {
				s.setup(t, l, e)
			}
			before := metric(t, "h1", "slim_broker_swaps_total", `op="listen"`)
			c := l.Run(lab.RunSpec{Host: "h1", Name: "s-" + s.name, Command: s.cmd(e)})
			waitListener(t, l.Config, "h1", c.IPv4, s.port, true)
			// The broker publishes before it installs the host socket and
			// counts the swap after: the count may trail the record.
			poll.Until(t, 5*time.Second, func() error {
				if got := metric(t, "h1", "slim_broker_swaps_total", `op="listen"`) - before; got < 1 {
					return fmt.Errorf("listener published but h1 counted %v listen swaps", got)
				}
				return nil
			})
			if s.ready != nil {
				s.ready(t, l, e, c)
			}
			serving[s.name] = c
		})
	}
	t.Run("serve/go-listens-with-mptcp", func(t *testing.T) {
		// The point of the Go server: Go >= 1.24 listens with
		// IPPROTO_MPTCP, and the broker swaps that socket for a TCP
		// host listener.
		if _, ok := serving["go"]; !ok {
			t.Skip("the Go server did not start (see serve/go)")
		}
		log := filepath.Join(l.Config.StateDir, "containers", "s-go.log")
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "mptcp listener: true") {
			t.Fatalf("the Go server did not listen with MPTCP (its log: %q); the test must cover that case", b)
		}
	})

	// Every client gets its own container on h2.
	cli := map[string]lab.Container{}
	for _, c := range clients {
		cli[c.name] = l.Run(lab.RunSpec{Host: "h2", Name: "c-" + c.name, Command: []string{"sleep", "infinity"}})
	}
	for _, s := range servers {
		for _, c := range clients {
			if c.proto != s.proto {
				continue
			}
			t.Run(s.name+"/"+c.name, func(t *testing.T) {
				requireTools(t, append(slices.Clone(s.need), c.need...))
				srv, ok := serving[s.name]
				if !ok {
					t.Fatalf("the %s server is not serving (see serve/%s)", s.label, s.name)
				}
				// Still published: the server is alive and swapped.
				waitListener(t, l.Config, "h1", srv.IPv4, s.port, true)
				for _, p := range exchange(t, l, e, c, cli[c.name], srv, s.port) {
					t.Error(p)
				}
			})
		}
	}

	// Exchanges that ride the overlay must fail the checks: the Go
	// client and server, as in go/go.
	var goGet compatClient
	for _, c := range clients {
		if c.name == "go" {
			goGet = c
		}
	}
	controlled := func(t *testing.T, from lab.Container, want ...string) {
		t.Helper()
		srv, ok := serving["go"]
		if !ok {
			t.Skip("the Go server did not start (see serve/go)")
		}
		probs := exchange(t, l, e, goGet, from, srv, 8080)
		for _, w := range want {
			if !slices.ContainsFunc(probs, func(p string) bool { return strings.HasPrefix(p, w+":") }) {
				t.Errorf("an exchange on the overlay passed the %s check (problems found: %q)", w, probs)
			}
		}
		if slices.ContainsFunc(probs, func(p string) bool { return strings.HasPrefix(p, "answer:") }) {
			t.Errorf("the exchange on the overlay failed: %q", probs)
		}
	}
	t.Run("overlay-control/unsupervised", func(t *testing.T) {
		// A --no-slim container has no seccomp filter: nothing is
		// swapped or counted as a fallback.
		c := l.Run(lab.RunSpec{Host: "h2", Name: "c-nosl", NoSlim: true, Command: []string{"sleep", "infinity"}})
		controlled(t, c, "swaps", "overlay")
	})
	t.Run("overlay-control/switch-off", func(t *testing.T) {
		// The switch off: the supervised client's connect is left to
		// the kernel (a fallback, reason disabled).
		api1, api2 := api.NewClient(lab.SocketPath(l.Config, "h1")), api.NewClient(lab.SocketPath(l.Config, "h2"))
		if _, err := api1.SetFastPath(t.Context(), false); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if _, err := api1.SetFastPath(context.WithoutCancel(t.Context()), true); err != nil {
				t.Error(err)
			}
		}()
		poll.Until(t, 10*time.Second, func() error {
			if st, err := api2.FastPath(t.Context()); err != nil || st.Active {
				return fmt.Errorf("h2's fast path still active: %+v %v", st, err)
			}
			return nil
		})
		controlled(t, cli["go"], "swaps", "fallbacks", "overlay")
	})
}

// exchange runs client c's exchange in container from with server srv's
// port and returns what is wrong with it: a wrong answer, or not the fast
// path. Each problem starts with its check's name (answer, swaps,
// fallbacks, overlay).
func exchange(t *testing.T, l *labtest.Lab, e *compatEnv, c compatClient, from, srv lab.Container, port uint16) []string {
	t.Helper()
	dst := netip.AddrPortFrom(srv.IPv4, port)
	path := overlayPath(t, from, srv)
	m0 := scrape(t, "h2")
	o0 := path.bytes(t)
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	start := time.Now()
	out, err := lab.Output(ctx, l.Config, from.Name, append(noProxy, c.cmd(e, dst)...)...)
	took := time.Since(start)
	overlay := path.bytes(t) - o0
	m1 := scrape(t, "h2")
	var probs []string
	moved, cerr := uint64(0), err
	if err != nil {
		cerr = fmt.Errorf("%v: %s", err, stderrOf(err))
	} else {
		moved, cerr = c.check(e, out)
	}
	if cerr != nil {
		probs = append(probs, fmt.Sprintf("answer: %s: %v", c.label, cerr))
		moved = compatDataSize // what it should have moved, for the overlay check
	}
	swaps := sumSamples(t, m1, "slim_broker_swaps_total", `op="connect"`) - sumSamples(t, m0, "slim_broker_swaps_total", `op="connect"`)
	if swaps < float64(c.conns) {
		probs = append(probs, fmt.Sprintf("swaps: h2 swapped %v connects; %s makes %d connections", swaps, c.label, c.conns))
	}
	if fb := fallbackRise(m0, m1); len(fb) > 0 {
		probs = append(probs, fmt.Sprintf("fallbacks: h2 left connects to the kernel (the overlay), by reason: %v", fb))
	}
	if overlay > moved/100+overlayBackground {
		probs = append(probs, fmt.Sprintf("overlay: the vxlan devices and the two veths carried %d bytes of an exchange of %d", overlay, moved))
	}
	t.Logf("%s in %s -> %s: %d bytes in %v, %v connects swapped, %d bytes on the overlay path",
		c.label, from.Name, dst, moved, took.Round(time.Millisecond), swaps, overlay)
	return probs
}

// ifacePath names the interfaces, by host, that a connection between two
// containers crosses on the overlay.
type ifacePath map[string][]string

// overlayPath is the overlay path between containers a and b: both
// hosts' vxlan devices, and each container's host veth (the peer of its
// eth0). Other containers' veths are left out: a just-started one's IPv6
// neighbour discovery is not the exchange's.
func overlayPath(t *testing.T, a, b lab.Container) ifacePath {
	t.Helper()
	p := ifacePath{}
	for _, c := range []lab.Container{a, b} {
		cns, err := netns.GetFromPath(c.Netns)
		if err != nil {
			t.Fatal(err)
		}
		hd, err := netlink.NewHandleAt(cns)
		cns.Close()
		if err != nil {
			t.Fatal(err)
		}
		eth, err := hd.LinkByName(lab.ContainerIface)
		hd.Close()
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		peer := eth.Attrs().ParentIndex // the host end's index, in the host's namespace
		withHost(t, c.Host, func(hd *netlink.Handle) {
			l, err := hd.LinkByIndex(peer)
			if err != nil {
				t.Fatalf("%s's host veth (index %d on %s): %v", c.Name, peer, c.Host, err)
			}
			if !slices.Contains(p[c.Host], "slim-vxlan") {
				p[c.Host] = append(p[c.Host], "slim-vxlan")
			}
			p[c.Host] = append(p[c.Host], l.Attrs().Name)
		})
	}
	return p
}

// bytes sums the path's interfaces' rx+tx bytes.
func (p ifacePath) bytes(t *testing.T) uint64 {
	t.Helper()
	var sum uint64
	for host, names := range p {
		withHost(t, host, func(hd *netlink.Handle) {
			for _, n := range names {
				l, err := hd.LinkByName(n)
				if err != nil {
					t.Fatalf("%s: %s: %v", host, n, err)
				}
				sum += l.Attrs().Statistics.RxBytes + l.Attrs().Statistics.TxBytes
			}
		})
	}
	return sum
}

// withHost calls fn with a netlink handle in lab host's namespace.
func withHost(t *testing.T, host string, fn func(*netlink.Handle)) {
	h := labtest.HostHandle(t, host)
	defer h.Close()
	fn(h)
}

// fallbackRise returns h2's connect fallbacks that rose between two
// scrapes, by reason. not_inet (AF_UNIX and other non-inet addresses)
// never rides the overlay and is left out.
func fallbackRise(before, after string) map[string]float64 {
	count := func(body string) map[string]float64 {
		m := map[string]float64{}
		for line := range strings.Lines(body) {
			rest, ok := strings.CutPrefix(line, `slim_broker_fallbacks_total{op="connect",reason="`)
			if !ok {
				continue
			}
			reason, val, _ := strings.Cut(rest, `"} `)
			v, _ := strconv.ParseFloat(strings.TrimSpace(val), 64)
			m[reason] = v
		}
		return m
	}
	b, a := count(before), count(after)
	rise := map[string]float64{}
	for r, v := range a {
		if r != "not_inet" && v > b[r] {
			rise[r] = v - b[r]
		}
	}
	return rise
}

// newCompatEnv makes the shared directory (readable by the postgres user
// and nginx's workers) and the payload.
func newCompatEnv(t *testing.T) *compatEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "slim-compat-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &compatEnv{dir: dir}
	// Printable and not periodic: a reordered or truncated answer shows.
	rng := rand.New(rand.NewPCG(1, 2))
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n"
	e.data = make([]byte, compatDataSize)
	for i := range e.data {
		e.data[i] = letters[rng.IntN(len(letters))]
	}
	if err := os.MkdirAll(e.path("www"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.path("www", "data.bin"), e.data, 0o644); err != nil {
		t.Fatal(err)
	}
	req := fmt.Appendf(nil, "set compat 0 0 %d\r\n%s\r\nget compat\r\nquit\r\n", len(e.data), e.data)
	if err := os.WriteFile(e.path("memcached.req"), req, 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// compatNginx is nginx as it usually runs (a master and a worker, which
// inherits the listener), with every file it writes under e's directory.
func compatNginx(e *compatEnv) apps.Nginx {
	return apps.Nginx{Prefix: e.path("nginx"), Listen: "8081", Root: e.path("www"), Master: true, Comment: "compat test"}
}

// initdb makes a PostgreSQL data directory, as internal/bench does.
func initdb(t *testing.T, l *labtest.Lab, e *compatEnv) {
	t.Helper()
	bin, err := apps.PostgresBinDir()
	if err != nil {
		t.Fatal(err)
	}
	e.pgBin = bin
	err = apps.InitPostgres(e.path("pg"), bin, func(command ...string) ([]byte, error) {
		return lab.Output(t.Context(), l.Config, "h1", command...)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// postgresReady waits until the postmaster says it accepts connections
// (the status line of postmaster.pid): it listens before it has finished
// starting up.
func postgresReady(t *testing.T, _ *labtest.Lab, e *compatEnv, _ lab.Container) {
	t.Helper()
	poll.Until(t, serverReadyTimeout, func() error {
		b, err := os.ReadFile(e.path("pg", "postmaster.pid"))
		if err != nil {
			return err
		}
		lines := strings.Split(string(b), "\n")
		if len(lines) < 8 || strings.TrimSpace(lines[7]) != "ready" {
			return fmt.Errorf("postmaster.pid: %q", b)
		}
		return nil
	})
}
