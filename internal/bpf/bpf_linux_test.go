//go:build linux && (amd64 || arm64)

package bpf

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/slimnet/slim/internal/testenv"
	"golang.org/x/sys/unix"
)

// Addresses of the rewrite tests. Host addresses are loopback inside the
// child's network namespace; VIPs never appear on any interface.
type rewriteCase struct {
	name             string
	host             string // host IP of both ends
	listen           string // listener bind address (host IP or wildcard)
	clientVIP        string
	serverVIP        string
	shownListenerVIP string // what getsockname on the listener shows
}

var rewriteCases = []rewriteCase{
	{name: "ipv4", host: "127.0.0.1", listen: "127.0.0.1", clientVIP: "10.200.0.2", serverVIP: "10.200.0.3", shownListenerVIP: "0.0.0.0"},
	{name: "ipv6", host: "::1", listen: "::1", clientVIP: "fd00:200::2", serverVIP: "fd00:200::3", shownListenerVIP: "fd00:200::3"},
	// An AF_INET6 dual-stack listener and client talking IPv4: the v6
	// hooks see v4-mapped addresses and find the IPv4 entries.
	{name: "v4mapped", host: "::ffff:127.0.0.1", listen: "::", clientVIP: "10.200.0.2", serverVIP: "10.200.0.3", shownListenerVIP: "::"},
}

const (
	blockStart = 20480 // aligned to 1<<testBlockBits
	hostPort   = 30001
	virtPort   = 80
)

// TestRewrite: getsockname, getpeername and accept4 on a client socket, a
// listener and an accepted socket show host addresses without entries and
// virtual ones with them, whoever calls (here: the test, outside the cgroup).
func TestRewrite(t *testing.T) {
	env := newEnv(t)
	p := env.load(t)
	c := startChild(t, env.cgroup)
	for i, tc := range rewriteCases {
		t.Run(tc.name, func(t *testing.T) {
			hostIP := netip.MustParseAddr(tc.host)
			hPort := uint16(hostPort + i)
			clientPort := uint16(blockStart + 7)
			mapped := func(a netip.Addr) netip.Addr {
				// The v6 hooks show IPv4 in v4-mapped form.
				if tc.name == "v4mapped" && a.Is4() {
					return netip.AddrFrom16(a.As16())
				}
				return a
			}
			host := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(hostIP, port) }
			clientV := func(port uint16) netip.AddrPort {
				return netip.AddrPortFrom(mapped(netip.MustParseAddr(tc.clientVIP)), port)
			}
			serverV := netip.AddrPortFrom(mapped(netip.MustParseAddr(tc.serverVIP)), virtPort)

			ln := c.fd(t, "listen %s", netip.AddrPortFrom(netip.MustParseAddr(tc.listen), hPort))
			cl := c.fd(t, "connect %s %s", host(clientPort), host(hPort))
			acc, accAddr := accept4(t, ln)

			// No entries: the kernel's addresses.
			want(t, "client local", getsockname(t, cl), host(clientPort))
			want(t, "client peer", getpeername(t, cl), host(hPort))
			want(t, "accept4 address", accAddr, host(clientPort))
			want(t, "accepted local", getsockname(t, acc), host(hPort))
			want(t, "accepted peer", getpeername(t, acc), host(clientPort))

			// What slimd does: per-socket entries for its own sockets,
			// the published port block and listener for the rest.
			vipClient := netip.MustParseAddr(tc.clientVIP)
			vipServer := netip.MustParseAddr(tc.serverVIP)
			check(t, p.SetSocket(cl, clientV(clientPort), serverV))
			check(t, p.SetSocket(ln, netip.AddrPortFrom(netip.MustParseAddr(tc.shownListenerVIP), virtPort), netip.AddrPort{}))
			check(t, p.PutPortBlock(hostIP, blockStart, vipClient))
			check(t, p.PutListener(hostIP, hPort, netip.AddrPortFrom(vipServer, virtPort)))

			want(t, "client local", getsockname(t, cl), clientV(clientPort))
			want(t, "client peer", getpeername(t, cl), serverV)
			want(t, "listener local", getsockname(t, ln), netip.AddrPortFrom(netip.MustParseAddr(tc.shownListenerVIP), virtPort))
			want(t, "accepted local", getsockname(t, acc), serverV)
			want(t, "accepted peer", getpeername(t, acc), clientV(clientPort))

			// A second connection, after publication: accept4's address
			// is rewritten too, and a socket without an entry of its own
			// is recognised from the maps.
			cl2 := c.fd(t, "connect %s %s", host(clientPort+1), host(hPort))
			acc2, accAddr2 := accept4(t, ln)
			want(t, "accept4 address", accAddr2, clientV(clientPort+1))
			want(t, "accepted local", getsockname(t, acc2), serverV)
			want(t, "accepted peer", getpeername(t, acc2), clientV(clientPort+1))
			want(t, "client without entry, local", getsockname(t, cl2), clientV(clientPort+1))
			want(t, "client without entry, peer", getpeername(t, cl2), serverV)

			// A port outside every block and a host port that is not a
			// listener stay as they are.
			cl3 := c.fd(t, "connect %s %s", host(blockStart-1), host(hPort))
			acc3, accAddr3 := accept4(t, ln)
			want(t, "accept4 address outside blocks", accAddr3, host(blockStart-1))
			want(t, "accepted peer outside blocks", getpeername(t, acc3), host(blockStart-1))
			want(t, "client outside blocks, local", getsockname(t, cl3), host(blockStart-1))

			// Withdrawn: host addresses again.
			check(t, p.DeleteSocket(cl))
			check(t, p.DeleteSocket(ln))
			check(t, p.DeletePortBlock(hostIP, blockStart))
			check(t, p.DeleteListener(hostIP, hPort, IsIPv6(vipServer)))
			check(t, p.DeleteListener(hostIP, hPort, IsIPv6(vipServer))) // idempotent
			want(t, "client local", getsockname(t, cl), host(clientPort))
			want(t, "client peer", getpeername(t, cl), host(hPort))
			want(t, "accepted local", getsockname(t, acc), host(hPort))
			want(t, "accepted peer", getpeername(t, acc), host(clientPort))
		})
	}
}

// TestGuard: sockets created in slimd's cgroup and handed to a process
// outside it (the test) refuse connect, bind, MSG_FASTOPEN and dangerous
// options; data and harmless options work; slimd itself may do everything.
func TestGuard(t *testing.T) {
	env := newEnv(t)
	env.load(t)
	c := startChild(t, env.cgroup)
	for _, v6 := range []bool{false, true} {
		name, lo := "ipv4", "127.0.0.1"
		if v6 {
			name, lo = "ipv6", "::1"
		}
		t.Run(name, func(t *testing.T) {
			target := addrport(lo, 7000)
			c.fd(t, "listen %s", target)
			if _, _, err := c.do("guard %s", target); err != nil {
				t.Errorf("slimd itself: %v", err)
			}

			fd := c.fd(t, "socket %s", map[bool]string{false: "4", true: "6"}[v6])
			for _, o := range dangerousOpts {
				if v6 && o.v6 || !v6 && o.v4 {
					if err := o.set(fd); !errors.Is(err, unix.EPERM) {
						t.Errorf("setsockopt %s: got %v, want EPERM", o.name, err)
					}
				}
			}
			for _, o := range harmlessOpts {
				if v6 && o.v6 || !v6 && o.v4 {
					if err := o.set(fd); err != nil {
						t.Errorf("setsockopt %s: %v", o.name, err)
					}
				}
			}
			if err := unix.Bind(fd, sockaddr(addrport(lo, 0), v6)); !errors.Is(err, unix.EPERM) {
				t.Errorf("bind: got %v, want EPERM", err)
			}
			if err := unix.Connect(fd, sockaddr(target, v6)); !errors.Is(err, unix.EPERM) {
				t.Errorf("connect: got %v, want EPERM", err)
			}
			// TCP fast open reaches the connect hook through
			// tcp_sendmsg_fastopen -> __inet_stream_connect.
			tfo := c.fd(t, "socket %s", map[bool]string{false: "4", true: "6"}[v6])
			if err := fastOpen(tfo, target); !errors.Is(err, unix.EPERM) {
				t.Errorf("sendto MSG_FASTOPEN: got %v, want EPERM", err)
			}

			// A connected socket: data flows, but after a disconnect by
			// connect(AF_UNSPEC), which no hook sees, it cannot connect
			// elsewhere.
			conn := c.fd(t, "connect - %s", target)
			if _, err := unix.Write(conn, []byte("data")); err != nil {
				t.Errorf("write on connected socket: %v", err)
			}
			// connect() on a socket slimd already connected, as an
			// application's connect() answered with CONTINUE after the
			// swap meets it: the kernel's own answer, no hook runs.
			if err := unix.Connect(conn, sockaddr(target, v6)); !errors.Is(err, unix.EISCONN) {
				t.Errorf("connect on connected socket: got %v, want EISCONN", err)
			}
			if err := disconnect(conn); err != nil {
				t.Errorf("connect AF_UNSPEC: %v", err)
			}
			if err := unix.Connect(conn, sockaddr(target, v6)); !errors.Is(err, unix.EPERM) {
				t.Errorf("connect after AF_UNSPEC: got %v, want EPERM", err)
			}

			// The same while slimd's connect is still in progress: a
			// listener with a full accept queue (backlog 0 holds one)
			// drops the SYN, the socket stays in SYN_SENT.
			full := addrport(lo, 7002)
			c.fd(t, "listen %s 0", full)
			c.fd(t, "connect - %s", full)
			connecting := c.fd(t, "connecting %s", full)
			if err := unix.Connect(connecting, sockaddr(full, v6)); !errors.Is(err, unix.EALREADY) {
				t.Errorf("connect on connecting socket: got %v, want EALREADY", err)
			}

			// Accepted sockets inherit the listener's cgroup: guarded too.
			ln := c.fd(t, "listen %s", addrport(lo, 7001))
			c.fd(t, "connect - %s", addrport(lo, 7001))
			acc, _ := accept4(t, ln)
			if err := unix.SetsockoptInt(acc, unix.SOL_SOCKET, unix.SO_MARK, 1); !errors.Is(err, unix.EPERM) {
				t.Errorf("SO_MARK on accepted socket: got %v, want EPERM", err)
			}
			if err := unix.SetsockoptInt(acc, unix.SOL_TCP, unix.TCP_NODELAY, 1); err != nil {
				t.Errorf("TCP_NODELAY on accepted socket: %v", err)
			}
		})
	}
}

// The broker's copy decides with Refuses, the program with guard.h, both
// from GuardedOptions: they agree on every case TestGuard runs through the
// kernel.
func TestRefusesAgreesWithGuard(t *testing.T) {
	for _, o := range dangerousOpts {
		if !Refuses(o.level, o.opt, o.val) {
			t.Errorf("%s: Refuses says allowed; the guard refuses it", o.name)
		}
	}
	for _, o := range harmlessOpts {
		if Refuses(o.level, o.opt, o.val) {
			t.Errorf("%s: Refuses says refused; the guard allows it", o.name)
		}
	}
}

// TestPinning: state and attachment survive Close (a slimd restart); a second
// Load swaps programs in place; Unpin detaches.
func TestPinning(t *testing.T) {
	env := newEnv(t)
	c := startChild(t, env.cgroup)
	hostIP := netip.MustParseAddr("127.0.0.1")
	vip := netip.MustParseAddr("10.200.0.3")

	p1, err := Load(env.config())
	if err != nil {
		t.Fatal(err)
	}
	check(t, p1.PutListener(hostIP, hostPort, netip.AddrPortFrom(vip, virtPort)))
	check(t, p1.PutPortBlock(hostIP, blockStart, netip.MustParseAddr("10.200.0.2")))
	ln := c.fd(t, "listen %s", netip.AddrPortFrom(hostIP, hostPort))
	check(t, p1.SetSocket(ln, netip.AddrPortFrom(vip, virtPort), netip.AddrPort{}))
	before := attachedProgs(t, env.cgroup)
	check(t, p1.Close())

	// No Programs open anywhere: still attached and rewriting, still
	// guarding.
	want(t, "listener while slimd is down", getsockname(t, ln), netip.AddrPortFrom(vip, virtPort))
	s := c.fd(t, "socket 4")
	if err := unix.Bind(s, sockaddr(addrport("127.0.0.1", 0), false)); !errors.Is(err, unix.EPERM) {
		t.Errorf("bind while slimd is down: got %v, want EPERM", err)
	}

	p2, err := Load(env.config())
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	ls, err := p2.Listeners()
	check(t, err)
	if wantLs := []Listener{{HostIP: hostIP, HostPort: hostPort, VIP: netip.AddrPortFrom(vip, virtPort), InMap6: IsIPv6(vip)}}; !slices.Equal(ls, wantLs) {
		t.Errorf("listeners after reload: %v, want %v", ls, wantLs)
	}
	bs, err := p2.PortBlocks()
	check(t, err)
	if wantBs := []PortBlock{{hostIP, blockStart, netip.MustParseAddr("10.200.0.2")}}; !slices.Equal(bs, wantBs) {
		t.Errorf("port blocks after reload: %v, want %v", bs, wantBs)
	}
	after := attachedProgs(t, env.cgroup)
	for at, ids := range after {
		if len(ids) != 1 {
			t.Errorf("%v: %d programs attached after reload, want 1", at, len(ids))
		}
		if slices.Equal(ids, before[at]) {
			t.Errorf("%v: program %v not replaced by reload", at, ids)
		}
	}
	if len(after) != len(guardHooks(t)) {
		t.Errorf("%d hooks attached, want %d", len(after), len(guardHooks(t)))
	}
	want(t, "listener after reload", getsockname(t, ln), netip.AddrPortFrom(vip, virtPort))

	check(t, Unpin(env.pinDir))
	if _, err := os.Stat(env.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir still there after Unpin: %v", err)
	}
	if n := len(attachedProgs(t, env.cgroup)); n != 0 {
		t.Errorf("%d hooks still attached after Unpin", n)
	}
	want(t, "listener after Unpin", getsockname(t, ln), netip.AddrPortFrom(hostIP, hostPort))
	s2 := c.fd(t, "socket 4")
	if err := unix.Bind(s2, sockaddr(addrport("127.0.0.1", 0), false)); err != nil {
		t.Errorf("bind after Unpin: %v", err)
	}
	check(t, Unpin(env.pinDir)) // idempotent
}

// TestLoadMovesCgroup: a Load with the same pin dir but another cgroup moves
// the attachment; nothing stays on the old cgroup.
func TestLoadMovesCgroup(t *testing.T) {
	env := newEnv(t)
	env.load(t)
	other := newCgroup(t)
	cfg := env.config()
	cfg.Cgroup = other
	p, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if n := len(attachedProgs(t, env.cgroup)); n != 0 {
		t.Errorf("%d hooks left on the old cgroup", n)
	}
	if n := len(attachedProgs(t, other)); n != len(guardHooks(t)) {
		t.Errorf("%d hooks on the new cgroup, want %d", n, len(guardHooks(t)))
	}
	check(t, Unpin(env.pinDir))
}

// TestBlockBitsChange: port blocks are keyed by the block size; a new size
// clears them.
func TestBlockBitsChange(t *testing.T) {
	env := newEnv(t)
	p := env.load(t)
	check(t, p.PutPortBlock(netip.MustParseAddr("192.0.2.1"), blockStart, netip.MustParseAddr("10.200.0.2")))
	if err := p.PutPortBlock(netip.MustParseAddr("192.0.2.1"), blockStart+1, netip.MustParseAddr("10.200.0.2")); err == nil {
		t.Error("unaligned port block accepted")
	}
	check(t, p.Close())
	cfg := env.config()
	cfg.BlockBits = testBlockBits + 1
	p2, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	bs, err := p2.PortBlocks()
	check(t, err)
	if len(bs) != 0 {
		t.Errorf("port blocks survived a block size change: %v", bs)
	}
}

func TestLoadRefuses(t *testing.T) {
	testenv.RequireRoot(t)
	root := cgroup2Mount(t)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"root cgroup", Config{Cgroup: root, PinDir: filepath.Join(bpfRoot, "slimtest-bpf-never"), BlockBits: 8}},
		{"no cgroup", Config{PinDir: "/sys/fs/bpf/x", BlockBits: 8}},
		{"relative pin dir", Config{Cgroup: root, PinDir: "x", BlockBits: 8}},
		{"block bits", Config{Cgroup: root, PinDir: "/sys/fs/bpf/x", BlockBits: 16}},
		{"cgroup v1", Config{Cgroup: "/proc", PinDir: "/sys/fs/bpf/x", BlockBits: 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if p, err := Load(tc.cfg); err == nil {
				p.Close()
				t.Fatal("Load succeeded")
			}
		})
	}
	env := newEnv(t)
	cfg := env.config()
	cfg.PinDir = t.TempDir() // not bpffs
	if p, err := Load(cfg); err == nil {
		p.Close()
		t.Error("Load with a pin dir outside bpffs succeeded")
	}
}

func TestProbe(t *testing.T) {
	testenv.RequireRoot(t)
	f, err := Probe()
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	t.Logf("features: %+v", f)
	var uname unix.Utsname
	check(t, unix.Uname(&uname))
	// Every required feature is in 5.8; this package's tests run on newer
	// kernels only.
	if !f.Usable() {
		t.Errorf("kernel %s lacks required features: %+v", unix.ByteSliceToString(uname.Release[:]), f)
	}
}

func TestAddrWords(t *testing.T) {
	for _, s := range []string{"10.1.2.3", "0.0.0.0", "::", "fd00::1", "2001:db8::ffff:1"} {
		a := netip.MustParseAddr(s)
		if got := addr(words(a)); got != a {
			t.Errorf("%s -> %v -> %s", s, words(a), got)
		}
	}
	// v4-mapped IPv6 is IPv4 in the maps.
	if got := addr(words(netip.MustParseAddr("::ffff:10.1.2.3"))); got != netip.MustParseAddr("10.1.2.3") {
		t.Errorf("v4-mapped came back as %s", got)
	}
	// Network byte order in memory, as in bpf_sock_addr.user_ip6.
	var b [16]byte
	for i, w := range words(netip.MustParseAddr("10.1.2.3")) {
		binary.NativeEndian.PutUint32(b[4*i:], w)
	}
	if b != [16]byte{10: 0xff, 11: 0xff, 12: 10, 13: 1, 14: 2, 15: 3} {
		t.Errorf("memory layout %x", b)
	}
}

// attachedProgs returns the program ids attached to cgroup per hook.
func attachedProgs(t testing.TB, cgroup string) map[ebpf.AttachType][]ebpf.ProgramID {
	t.Helper()
	out := map[ebpf.AttachType][]ebpf.ProgramID{}
	for _, at := range guardHooks(t) {
		res, err := link.QueryPrograms(link.QueryOptions{Target: mustOpenFD(t, cgroup), Attach: at})
		if err != nil {
			t.Fatalf("query %v: %v", at, err)
		}
		for _, p := range res.Programs {
			out[at] = append(out[at], p.ID)
		}
	}
	return out
}

func mustOpenFD(t testing.TB, path string) int {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func want(t testing.TB, what string, got, want netip.AddrPort) {
	t.Helper()
	if got != want {
		t.Errorf("%s: got %s, want %s", what, got, want)
	}
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The recorders on a container's cgroup note each TCP socket born there
// and every option set on it, for this load's generation only.
func TestRecorder(t *testing.T) {
	e := newEnv(t)
	p := e.load(t)
	app := newCgroup(t)
	rec, err := p.Record(app)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	c := startChild(t, app)

	for _, v6 := range []bool{false, true} {
		fd := c.fd(t, "socket %d", map[bool]int{false: 4, true: 6}[v6])
		a, ok, err := p.AppSocket(fd)
		if err != nil || !ok {
			t.Fatalf("v6 %v: no record (%v)", v6, err)
		}
		cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		if err != nil {
			t.Fatal(err)
		}
		fam := map[bool]int{false: unix.AF_INET, true: unix.AF_INET6}[v6]
		if a.Family != fam || a.Protocol != unix.IPPROTO_TCP || a.NetnsCookie != cookie || a.Opts != 0 {
			t.Errorf("v6 %v: record %+v, want family %d, TCP, cookie %d, no options", v6, a, fam, cookie)
		}
		// The socket's cgroup decides, not the caller's: setting the
		// options from here is recorded too.
		opts := []struct{ level, name, val int }{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.SOL_SOCKET, unix.SO_RCVBUF, 65536},
			{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 30},
		}
		var want uint64
		for _, o := range opts {
			if err := unix.SetsockoptInt(fd, o.level, o.name, o.val); err != nil {
				t.Fatal(err)
			}
			want |= OptBit(o.level, o.name)
		}
		if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, "reno"); err != nil {
			t.Fatal(err)
		}
		want |= OptBit(unix.IPPROTO_TCP, unix.TCP_CONGESTION)
		if a, _, _ := p.AppSocket(fd); a.Opts != want || a.Connected || a.Listened {
			t.Errorf("v6 %v: record %+v, want options %#x, not connected or listened", v6, a, want)
		}
		check(t, p.MarkListened(fd))
		if a, _, _ := p.AppSocket(fd); !a.Listened || a.Connected {
			t.Errorf("v6 %v: after MarkListened: record %+v", v6, a)
		}
		// A connect the kernel runs, even a failed one, marks the socket.
		conn := c.fd(t, "socket %d", map[bool]int{false: 4, true: 6}[v6])
		lo := map[bool]string{false: "127.0.0.1", true: "::1"}[v6]
		unix.Connect(conn, sockaddr(addrport(lo, 9), v6)) // refused: nothing listens
		if a, _, _ := p.AppSocket(conn); !a.Connected {
			t.Errorf("v6 %v: after connect: record %+v, want connected", v6, a)
		}
	}

	// slimd's own sockets (its cgroup has no recorders) have no record.
	slimd := startChild(t, e.cgroup)
	if _, ok, err := p.AppSocket(slimd.fd(t, "socket 4")); ok || err != nil {
		t.Errorf("socket in slimd's cgroup: recorded %v (%v)", ok, err)
	}

	// A later load (a restarted slimd) disowns the records: setsockopt
	// calls made while no recorder was attached would be missing.
	fd := c.fd(t, "socket 4")
	rec.Close()
	p2 := e.load(t)
	if _, ok, _ := p2.AppSocket(fd); ok {
		t.Error("record of the previous generation trusted")
	}
	// Detached: new sockets are not recorded.
	if _, ok, _ := p2.AppSocket(c.fd(t, "socket 4")); ok {
		t.Error("socket recorded after the recorders were closed")
	}
}

// specHooks are the hooks of every program of the compiled object.
func specHooks(t testing.TB) map[string]ebpf.AttachType {
	t.Helper()
	spec, err := loadSlim()
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := hooksOf(spec)
	if err != nil {
		t.Fatal(err)
	}
	return hooks
}

// guardHooks are the hooks of the programs attached to slimd's cgroup.
func guardHooks(t testing.TB) map[string]ebpf.AttachType {
	t.Helper()
	hooks := specHooks(t)
	out := map[string]ebpf.AttachType{}
	for name := range (&Programs{}).programs() {
		out[name] = hooks[name]
	}
	return out
}

// TestHooksFromELF: every program's hook comes from its section name; a
// renamed section would move a program to another hook.
func TestHooksFromELF(t *testing.T) {
	hooks := specHooks(t)
	want := map[string]ebpf.AttachType{
		slimProgSlimGetsockname4:     ebpf.AttachCgroupInet4GetSockname,
		slimProgSlimGetsockname6:     ebpf.AttachCgroupInet6GetSockname,
		slimProgSlimGetpeername4:     ebpf.AttachCgroupInet4GetPeername,
		slimProgSlimGetpeername6:     ebpf.AttachCgroupInet6GetPeername,
		slimProgSlimConnect4:         ebpf.AttachCGroupInet4Connect,
		slimProgSlimConnect6:         ebpf.AttachCGroupInet6Connect,
		slimProgSlimBind4:            ebpf.AttachCGroupInet4Bind,
		slimProgSlimBind6:            ebpf.AttachCGroupInet6Bind,
		slimProgSlimSetsockopt:       ebpf.AttachCGroupSetsockopt,
		slimProgSlimRelease:          ebpf.AttachCgroupInetSockRelease,
		slimProgSlimRecordCreate:     ebpf.AttachCGroupInetSockCreate,
		slimProgSlimRecordSetsockopt: ebpf.AttachCGroupSetsockopt,
		slimProgSlimRecordConnect4:   ebpf.AttachCGroupInet4Connect,
		slimProgSlimRecordConnect6:   ebpf.AttachCGroupInet6Connect,
	}
	if !maps.Equal(hooks, want) {
		t.Fatalf("hooks from the ELF sections:\n%v\nwant\n%v", hooks, want)
	}
	spec, err := loadSlim()
	if err != nil {
		t.Fatal(err)
	}
	spec.Programs[slimProgSlimBind4].AttachType = ebpf.AttachNone
	if _, err := hooksOf(spec); err == nil {
		t.Fatal("a program without a hook was accepted")
	}
}

// TestLoadGrowsPinnedMaps: a pinned map of an earlier version with a
// smaller capacity is replaced by one of this version's size, its entries
// kept; an upgrade loses no port block.
func TestLoadGrowsPinnedMaps(t *testing.T) {
	env := newEnv(t)
	spec, err := loadSlim()
	check(t, err)
	ms := spec.Maps[slimMapSlimBlocks].Copy()
	ms.MaxEntries = 1024
	ms.Pinning = ebpf.PinNone
	old, err := ebpf.NewMap(ms)
	check(t, err)
	defer old.Close()
	k, v := make([]byte, ms.KeySize), make([]byte, ms.ValueSize)
	for i := range k {
		k[i] = byte(i + 1)
	}
	v[0] = 42
	check(t, old.Put(k, v))
	check(t, os.MkdirAll(env.pinDir, 0o700))
	check(t, old.Pin(filepath.Join(env.pinDir, slimMapSlimBlocks)))
	p := env.load(t)
	if got, want := p.objs.SlimBlocks.MaxEntries(), spec.Maps[slimMapSlimBlocks].MaxEntries; got != want {
		t.Fatalf("slim_blocks holds %d entries, want %d", got, want)
	}
	got := make([]byte, ms.ValueSize)
	if err := p.objs.SlimBlocks.Lookup(k, &got); err != nil || got[0] != 42 {
		t.Fatalf("entry after the upgrade: %v %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(env.pinDir, slimMapSlimBlocks+"_grow")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary pin left: %v", err)
	}
}

// TestPortBlocksBatches: reading the map back in batches returns every
// entry once, across several batches, IPv6 included.
func TestPortBlocksBatches(t *testing.T) {
	env := newEnv(t)
	p := env.load(t)
	var want []PortBlock
	for i := range 10_000 {
		host := netip.AddrFrom4([4]byte{100, 64, byte(i / 100 >> 8), byte(i / 100)})
		vip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if i%7 == 0 {
			vip = netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)})
		}
		b := PortBlock{HostIP: host, Start: uint16(20480 + (i%100)*256), VIP: vip}
		check(t, p.PutPortBlock(b.HostIP, b.Start, b.VIP))
		want = append(want, b)
	}
	slices.SortFunc(want, func(a, b PortBlock) int {
		return cmp.Or(a.HostIP.Compare(b.HostIP), cmp.Compare(a.Start, b.Start))
	})
	got, err := p.PortBlocks()
	check(t, err)
	slices.SortFunc(got, func(a, b PortBlock) int {
		return cmp.Or(a.HostIP.Compare(b.HostIP), cmp.Compare(a.Start, b.Start))
	})
	if !slices.Equal(got, want) {
		t.Fatalf("read back %d blocks, want %d (first differing: %v)", len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []PortBlock) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("#%d %v != %v", i, a[i], b[i])
		}
	}
	return "lengths"
}
