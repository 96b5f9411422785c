package seccomp

import (
	"errors"
	"os"
	"testing"
	"unsafe"

	"github.com/slimnet/slim/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestFdinfoFlags(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"pos:\t0\nflags:\t02000002\nmnt_id:\t8\nino:\t1234\n", 0o2000002, true},
		{"pos:\t0\nflags:\t04000\n", 0o4000, true},
		{"flags: 0\n", 0, true},
		{"pos:\t0\nflags:\t02000002", 0o2000002, true}, // cut after the value
		{"pos:\t0\n", 0, false},
		{"flags:\t\n", 0, false},
		{"flags:\t0x12\n", 0, false},
		{"flags:\t0800\n", 0, false},
		{"flags:\t7777777777777777777777777\n", 0, false},
		{"", 0, false},
	} {
		got, err := fdinfoFlags([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("fdinfoFlags(%q) = %#o, %v; want %#o, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzFdinfoFlags(f *testing.F) {
	f.Add([]byte("pos:\t0\nflags:\t02000002\nmnt_id:\t8\n"))
	f.Add([]byte("flags:\t"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fdinfoFlags(b) // must not panic
	})
}

func TestCloexecOfSelf(t *testing.T) {
	for _, cloexec := range []bool{true, false} {
		flags := unix.O_RDONLY
		if cloexec {
			flags |= unix.O_CLOEXEC
		}
		fd, err := unix.Open("/dev/null", flags, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := CloexecOf(unix.Gettid(), fd)
		unix.Close(fd)
		if err != nil || got != cloexec {
			t.Errorf("CloexecOf = %v, %v; want %v", got, err, cloexec)
		}
	}
	if _, err := CloexecOf(os.Getpid(), 1<<20); !errors.Is(err, unix.EBADF) || errors.Is(err, ErrGone) {
		t.Errorf("CloexecOf of a closed fd: %v, want EBADF", err)
	}
	// Beyond pid_max's ceiling (1<<22): no such thread.
	if _, err := CloexecOf(1<<30, 0); !errors.Is(err, ErrGone) {
		t.Errorf("CloexecOf of a missing thread: %v, want ErrGone", err)
	}
}

// FDInfo keeps one file per thread and fd number and follows what the
// number holds: a reused number shows the new file's flags, a closed one
// EBADF, a missing thread ErrGone.
func TestFDInfoCache(t *testing.T) {
	var c FDInfo
	defer c.Close()
	tid := os.Getpid() // the thread group leader: its fd table is ours
	for i, flags := range []int{unix.O_RDONLY | unix.O_CLOEXEC, unix.O_RDONLY | unix.O_NONBLOCK, unix.O_RDONLY} {
		fd, err := unix.Open("/dev/null", flags, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Flags(tid, fd)
		if err != nil || got&(unix.O_CLOEXEC|unix.O_NONBLOCK) != uint64(flags&(unix.O_CLOEXEC|unix.O_NONBLOCK)) {
			t.Errorf("round %d: flags %#o (%v), want %#o", i, got, err, flags)
		}
		unix.Close(fd) // the next round reuses the number
		if _, err := c.Flags(tid, fd); !errors.Is(err, unix.EBADF) {
			t.Errorf("round %d: closed fd: %v, want EBADF", i, err)
		}
	}
	if _, err := c.Flags(1<<30, 0); !errors.Is(err, ErrGone) {
		t.Errorf("missing thread: %v, want ErrGone", err)
	}
	for fd := range maxFDInfo + 10 { // bounded
		c.Flags(tid, fd%8)
		c.Flags(tid+0, 100+fd)
	}
	if n := len(c.files); n > maxFDInfo {
		t.Errorf("%d files kept, bound %d", n, maxFDInfo)
	}
}

// As root on a kernel with PIDFD_THREAD (6.9), slimd can fetch sockets.
func TestProbeFetch(t *testing.T) {
	testenv.RequireRoot(t)
	if err := ProbeFetch(); err != nil {
		t.Errorf("ProbeFetch: %v", err)
	}
}

func TestReadMemSelf(t *testing.T) {
	want := []byte("slim reads its own memory")
	got, err := ReadMem(unix.Gettid(), uint64(uintptr(unsafe.Pointer(&want[0]))), len(want))
	if err != nil || string(got) != string(want) {
		t.Fatalf("ReadMem = %q, %v", got, err)
	}
	for _, n := range []int{0, -1, MaxReadMem + 1} {
		if _, err := ReadMem(unix.Gettid(), uint64(uintptr(unsafe.Pointer(&want[0]))), n); err == nil {
			t.Errorf("ReadMem of %d bytes succeeded", n)
		}
	}
	if _, err := ReadMem(unix.Gettid(), 8, 8); !errors.Is(err, unix.EFAULT) {
		t.Errorf("ReadMem at 8: %v, want EFAULT", err)
	}
}

func TestPidFDSelfThread(t *testing.T) {
	fd, err := PidFD(unix.Gettid())
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	dup, err := GetFD(fd, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(dup)
}
