package seccomp

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/slimnet/slim/internal/testenv"
	"golang.org/x/sys/unix"
)

// BenchmarkNotifRoundTrip measures a trapped call's round trip, the same
// C target process (testdata/roundtrip.c) answered two ways: by a C
// supervisor (the kernel's floor on this machine) and by the project's own
// loop (a Receiver on a locked thread, then Continue, as the broker runs
// it). "continue" is RECV then SEND CONTINUE; "addfd" puts a socket over
// the caller's fd first, as a swapped connect does; "addfd-send" (C only)
// installs the socket and answers in one ioctl (SECCOMP_ADDFD_FLAG_SEND),
// the one round trip a trapped socket() would take. "pinned" keeps the C
// supervisor and its target on one CPU. Each figure is the target's own
// time per call over b.N calls.
//
//	go test -run '^$' -bench NotifRoundTrip -benchtime 20000x ./internal/seccomp/
func BenchmarkNotifRoundTrip(b *testing.B) {
	testenv.RequireRoot(b)
	bin := buildRoundTrip(b)
	for _, mode := range []struct {
		name  string
		addfd bool
		arg   string // roundtrip.c's MODE
	}{{"continue", false, "0"}, {"addfd", true, "1"}, {"addfd-send", true, "2"}} {
		arg := map[bool]string{false: "0", true: "1"}
		for _, pinned := range []bool{false, true} {
			name := "c/" + mode.name
			if pinned {
				name += "/pinned"
			}
			b.Run(name, func(b *testing.B) {
				out, err := exec.Command(bin, "supervise", mode.arg, arg[pinned], strconv.Itoa(b.N)).Output()
				if err != nil {
					b.Fatalf("roundtrip: %v", err)
				}
				b.ReportMetric(nsPerCall(b, out), "ns/op")
			})
		}
		if mode.arg == "2" {
			continue // the C floor only: slimd's loop does not answer this way
		}
		b.Run("go/"+mode.name, func(b *testing.B) {
			b.ReportMetric(goRoundTrip(b, bin, mode.addfd), "ns/op")
		})
	}
}

// goRoundTrip answers b.N calls of a C target with the project's loop and
// returns the target's time per call.
func goRoundTrip(b *testing.B, bin string, addfd bool) float64 {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(pair[0]), "supervisor"), os.NewFile(uintptr(pair[1]), "target")
	defer mine.Close()
	cmd := exec.Command(bin, "target", strconv.Itoa(b.N))
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	theirs.Close()
	defer cmd.Wait()
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(pair[0], make([]byte, 1), oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		b.Fatalf("no notification fd: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		b.Fatalf("no notification fd: %v", err)
	}
	l := NewListener(fds[0])
	defer l.Close()
	if err := l.SetSyncWakeUp(); err != nil {
		b.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r, err := l.NewReceiver(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(sock)
	mine.Write([]byte("g"))
	for range b.N {
		n, err := r.Receive()
		if err != nil {
			b.Fatal(err)
		}
		if addfd {
			if _, err := l.AddFD(n.ID, sock, int(int32(n.Args[0])), true, false, true); err != nil {
				b.Fatal(err)
			}
		}
		if err := l.Continue(n.ID); err != nil {
			b.Fatal(err)
		}
	}
	if err := cmd.Wait(); err != nil {
		b.Fatalf("target: %v", err)
	}
	return nsPerCall(b, []byte(out.String()))
}

func nsPerCall(b *testing.B, out []byte) float64 {
	ns, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(string(out), "ns_per_call ")), 64)
	if err != nil {
		b.Fatalf("roundtrip output %q: %v", out, err)
	}
	return ns
}

// buildRoundTrip compiles testdata/roundtrip.c with the machine's C
// compiler (scripts/deps.sh installs gcc).
func buildRoundTrip(b *testing.B) string {
	b.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		if os.Getenv("CI") != "" {
			b.Fatal("no C compiler (scripts/deps.sh installs gcc)")
		}
		b.Skip("no C compiler")
	}
	bin := filepath.Join(b.TempDir(), "roundtrip")
	if out, err := exec.Command(cc, "-O2", "-o", bin, "testdata/roundtrip.c", "-lpthread").CombinedOutput(); err != nil {
		b.Fatalf("compile roundtrip.c: %v: %s", err, out)
	}
	return bin
}
