package broker

import (
	"testing"

	"golang.org/x/sys/unix"
)

func tcpSocket(t *testing.T, family int) int {
	t.Helper()
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestCopyOptions(t *testing.T) {
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		app := tcpSocket(t, family)
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(unix.SetsockoptInt(app, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1))
		must(unix.SetsockoptInt(app, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1))
		must(unix.SetsockoptInt(app, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 17))
		must(unix.SetsockoptInt(app, unix.SOL_SOCKET, unix.SO_RCVBUF, 32768))
		must(unix.SetsockoptLinger(app, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 3}))
		must(unix.SetsockoptTimeval(app, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{Sec: 2}))
		must(unix.SetsockoptString(app, unix.IPPROTO_TCP, unix.TCP_CONGESTION, "reno"))
		if family == unix.AF_INET6 {
			must(unix.SetsockoptInt(app, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1))
		}
		defaults := readOpts(tcpSocket(t, family), family, true, allOpts)
		want := readOpts(app, family, true, allOpts)
		host := tcpSocket(t, family)
		n, err := want.applyDiff(host, defaults)
		if err != nil {
			t.Fatal(err)
		}
		wantN := 7
		if family == unix.AF_INET6 {
			wantN = 8
		}
		if n != wantN {
			t.Errorf("family %d: copied %d options, want %d (only those that differ)", family, n, wantN)
		}
		got := readOpts(host, family, true, allOpts)
		for i := range copiedOpts {
			if got.ok[i] != want.ok[i] || got.vals[i] != want.vals[i] {
				t.Errorf("family %d option %d/%d: host %+v, app %+v", family, copiedOpts[i].level, copiedOpts[i].name, got.vals[i], want.vals[i])
			}
		}
		// A fresh socket copies nothing: autotuned buffers stay autotuned.
		if n, _ := defaults.applyDiff(tcpSocket(t, family), defaults); n != 0 {
			t.Errorf("defaults copied %d options", n)
		}
	}
}

// Values the guard refuses on host sockets are caught before a copy:
// slimd must not set, as slimd, what the container may not.
func TestRefusedOptions(t *testing.T) {
	for _, tc := range []struct {
		name          string
		family        int
		level, opt, v int
		refused       bool
	}{
		{"IP_TOS EF", unix.AF_INET, unix.IPPROTO_IP, unix.IP_TOS, 0xb8, true},
		{"IP_TOS CS7", unix.AF_INET, unix.IPPROTO_IP, unix.IP_TOS, 0xe0, true},
		{"IP_TOS AF21", unix.AF_INET, unix.IPPROTO_IP, unix.IP_TOS, 0x48, false},
		{"IPV6_TCLASS EF", unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 0xb8, true},
		{"IPV6_TCLASS AF21", unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 0x48, false},
		{"SO_REUSEPORT (slimd's groups)", unix.AF_INET, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1, false},
		{"TCP_NODELAY", unix.AF_INET, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := tcpSocket(t, tc.family)
			if err := unix.SetsockoptInt(app, tc.level, tc.opt, tc.v); err != nil {
				t.Fatal(err)
			}
			defaults := readOpts(tcpSocket(t, tc.family), tc.family, true, allOpts)
			if _, bad := readOpts(app, tc.family, true, allOpts).refused(defaults); bad != tc.refused {
				t.Errorf("refused %v, want %v", bad, tc.refused)
			}
		})
	}
}
