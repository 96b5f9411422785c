package seccomp

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxReadMem bounds ReadMem: a sockaddr or a msghdr is far smaller, and the
// broker must never copy unbounded amounts out of a target.
const MaxReadMem = 4096

// ReadMem reads n (1..MaxReadMem) bytes at addr from thread tid's address
// space (process_vm_readv; needs CAP_SYS_PTRACE over the target). A short
// read is an error.
//
// The thread id can belong to another process by the time of the read if
// the target died: after reading, check that the notification is still
// valid (Listener.IDValid) before trusting the bytes, or use
// Listener.ReadMem, which does both. Read once and work on the copy: the
// target's other threads can change the memory at any time.
func ReadMem(tid int, addr uint64, n int) ([]byte, error) {
	if n <= 0 || n > MaxReadMem {
		return nil, fmt.Errorf("read %d bytes from thread %d: size out of range 1..%d", n, tid, MaxReadMem)
	}
	buf := make([]byte, n)
	if err := ReadMemInto(tid, addr, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// ReadMemInto is ReadMem into buf (1..MaxReadMem bytes): the connect path
// reads every sockaddr into one buffer instead of allocating.
func ReadMemInto(tid int, addr uint64, buf []byte) error {
	n := len(buf)
	if n <= 0 || n > MaxReadMem {
		return fmt.Errorf("read %d bytes from thread %d: size out of range 1..%d", n, tid, MaxReadMem)
	}
	local := unix.Iovec{Base: &buf[0]}
	local.SetLen(n)
	remote := unix.RemoteIovec{Base: uintptr(addr), Len: n}
	// The raw call: unix.ProcessVMReadv takes slices, which escape.
	got, _, e := unix.Syscall6(unix.SYS_PROCESS_VM_READV, uintptr(tid), uintptr(unsafe.Pointer(&local)), 1,
		uintptr(unsafe.Pointer(&remote)), 1, 0)
	if e != 0 {
		if e == unix.ESRCH {
			return fmt.Errorf("read thread %d at %#x: %w (%w)", tid, addr, ErrGone, e)
		}
		return fmt.Errorf("read thread %d at %#x: %w", tid, addr, e)
	}
	if int(got) != n {
		return fmt.Errorf("read thread %d at %#x: %d of %d bytes: %w", tid, addr, got, n, io.ErrUnexpectedEOF)
	}
	return nil
}

// PidFD opens a pidfd for thread tid (pidfd_open with PIDFD_THREAD, Linux
// 6.9: a notification's pid is a thread id, which plain pidfd_open refuses
// unless it leads its thread group). The fd is close-on-exec. As with
// ReadMem, check the notification's validity after opening it: only then is
// the pidfd known to refer to the target.
func PidFD(tid int) (int, error) {
	fd, err := unix.PidfdOpen(tid, unix.PIDFD_THREAD)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return -1, fmt.Errorf("pidfd_open thread %d: %w (%w)", tid, ErrGone, err)
		}
		return -1, fmt.Errorf("pidfd_open thread %d: %w", tid, err)
	}
	return fd, nil
}

// GetFD duplicates fd of the process behind pidfd into ours (pidfd_getfd;
// needs CAP_SYS_PTRACE over the target). The copy shares the open file
// description (so O_NONBLOCK and the socket are the target's) and always has
// O_CLOEXEC set; the target's own close-on-exec flag is CloexecOf's.
func GetFD(pidfd int, fd int) (int, error) {
	nfd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) { // the process has exited
			return -1, fmt.Errorf("pidfd_getfd fd %d: %w (%w)", fd, ErrGone, err)
		}
		return -1, fmt.Errorf("pidfd_getfd fd %d: %w", fd, err)
	}
	return nfd, nil
}

// CloexecOf reports whether the target's fd has close-on-exec set. The flag
// belongs to the fd table, not the open file, so no copy shows it: it is
// read from the "flags:" line of /proc/TID/fdinfo/FD (one open, one read of
// at most 256 bytes; the line comes second, after "pos:"). A thread that is
// gone is ErrGone, an fd that is not open EBADF.
func CloexecOf(tid int, fd int) (bool, error) {
	flags, err := FDFlags(tid, fd)
	return flags&unix.O_CLOEXEC != 0, err
}

// FDFlags returns the target's fd's file status flags (O_NONBLOCK, ...)
// together with its close-on-exec flag as O_CLOEXEC: the "flags:" line of
// /proc/TID/fdinfo/FD. One read answers both, where a copy of the fd would
// need an fcntl and still not know close-on-exec.
func FDFlags(tid int, fd int) (uint64, error) {
	f, err := openFDInfo(tid, fd)
	if err != nil {
		return 0, err
	}
	var buf [256]byte
	n, err := unix.Read(f, buf[:])
	unix.Close(f)
	if err != nil {
		return 0, fmt.Errorf("read fdinfo of thread %d fd %d: %w", tid, fd, err)
	}
	flags, err := fdinfoFlags(buf[:n])
	if err != nil {
		return 0, fmt.Errorf("fdinfo of thread %d fd %d: %w", tid, fd, err)
	}
	return flags, nil
}

// fdinfoError tells a gone thread (ErrGone) from a closed fd (EBADF) when
// /proc/TID/fdinfo/FD cannot be opened: both are ENOENT.
func fdinfoError(path []byte, tid, fd int, e unix.Errno) error {
	if e == unix.ENOENT {
		dir := path[:len(path)-len("/fdinfo/")-len(strconv.Itoa(fd))]
		if err := unix.Access(string(dir), unix.F_OK); err == nil {
			return fmt.Errorf("fdinfo of thread %d fd %d: %w", tid, fd, unix.EBADF)
		}
	}
	if e == unix.ENOENT || e == unix.ESRCH {
		return fmt.Errorf("fdinfo of thread %d fd %d: %w (%w)", tid, fd, ErrGone, e)
	}
	return fmt.Errorf("open fdinfo of thread %d fd %d: %w", tid, fd, e)
}

// fdinfoFlags parses the octal value of the "flags:" line of an fdinfo file.
func fdinfoFlags(b []byte) (uint64, error) {
	const key = "flags:"
	for len(b) > 0 {
		line := b
		rest := []byte(nil)
		for i, c := range b {
			if c == '\n' {
				line, rest = b[:i], b[i+1:]
				break
			}
		}
		if len(line) >= len(key) && string(line[:len(key)]) == key {
			v := line[len(key):]
			for len(v) > 0 && (v[0] == '\t' || v[0] == ' ') {
				v = v[1:]
			}
			if len(v) == 0 {
				break
			}
			var flags uint64
			for _, c := range v {
				if c < '0' || c > '7' || flags > (1<<60) {
					return 0, fmt.Errorf("bad flags %q", line)
				}
				flags = flags<<3 | uint64(c-'0')
			}
			return flags, nil
		}
		b = rest
	}
	return 0, errors.New("no flags line")
}

// maxFDInfo bounds an FDInfo cache: past it, every file is closed and the
// cache starts over.
const maxFDInfo = 256

// FDInfo keeps /proc/TID/fdinfo/FD files open for re-reading: one pread
// (about 2 us here) instead of an open, a read and a close (about 7.5 us).
// A kept file follows whatever file the fd number holds at each read, so
// a thread that connects again and again on the same fd number (the
// lowest free one) reads its one file. It is safe for concurrent use.
type FDInfo struct {
	mu    sync.Mutex
	files map[fdKey]int
}

type fdKey struct{ tid, fd int32 }

// Flags is FDFlags through the cache.
func (c *FDInfo) Flags(tid int, fd int) (uint64, error) {
	k := fdKey{int32(tid), int32(fd)}
	c.mu.Lock()
	f, ok := c.files[k]
	c.mu.Unlock()
	if !ok {
		var err error
		if f, err = openFDInfo(tid, fd); err != nil {
			return 0, err
		}
		c.mu.Lock()
		if c.files == nil || len(c.files) >= maxFDInfo {
			c.closeLocked()
			c.files = make(map[fdKey]int, 16)
		}
		if old, ok := c.files[k]; ok {
			unix.Close(f) // another caller was faster
			f = old
		} else {
			c.files[k] = f
		}
		c.mu.Unlock()
	}
	var buf [256]byte
	n, err := unix.Pread(f, buf[:], 0)
	if err != nil {
		// The fd was closed (ENOENT) or the thread is gone (ESRCH):
		// forget the file, and say which as FDFlags does.
		c.mu.Lock()
		if c.files[k] == f {
			delete(c.files, k)
			unix.Close(f)
		}
		c.mu.Unlock()
		return FDFlags(tid, fd)
	}
	flags, err := fdinfoFlags(buf[:n])
	if err != nil {
		return 0, fmt.Errorf("fdinfo of thread %d fd %d: %w", tid, fd, err)
	}
	return flags, nil
}

// Close closes the kept files.
func (c *FDInfo) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked()
}

func (c *FDInfo) closeLocked() {
	for k, f := range c.files {
		unix.Close(f)
		delete(c.files, k)
	}
}

func openFDInfo(tid, fd int) (int, error) {
	p := fdinfoPath(tid, fd)
	dirfd := unix.AT_FDCWD
	f, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(&p[0])),
		unix.O_RDONLY|unix.O_CLOEXEC, 0, 0, 0)
	if e != 0 {
		return -1, fdinfoError(p[:len(p)-1], tid, fd, e)
	}
	return int(f), nil
}

// fdinfoPath is "/proc/TID/fdinfo/FD" NUL-terminated, built without
// allocating on the heap.
func fdinfoPath(tid, fd int) []byte {
	var pathBuf [64]byte
	p := append(pathBuf[:0], "/proc/"...)
	p = strconv.AppendInt(p, int64(tid), 10)
	p = append(p, "/fdinfo/"...)
	p = strconv.AppendInt(p, int64(fd), 10)
	return append(p, 0)
}

// ProbeFetch checks that this process can take a socket from another
// thread the way the broker does (pidfd_open with PIDFD_THREAD, then
// pidfd_getfd), trying it on one of its own threads: nil if it can, an
// error wrapping EPERM (no CAP_SYS_PTRACE, a security module) or
// ENOSYS/EINVAL (the kernel lacks it) otherwise. Without it every connect
// and listen is left to the overlay (reasons permission or unsupported).
func ProbeFetch() error {
	pidfd, err := PidFD(unix.Gettid())
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	fd, err := GetFD(pidfd, pidfd)
	if err != nil {
		return err
	}
	unix.Close(fd)
	return nil
}
