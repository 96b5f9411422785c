package seccomp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Notif is one trapped system call (struct seccomp_notif).
type Notif struct {
	ID    uint64
	PID   uint32 // a thread id, in the receiver's pid namespace
	Flags uint32
	Nr    int32
	Arch  uint32
	IP    uint64
	Args  [6]uint64
}

// Syscall names the trapped call.
func (n Notif) Syscall() Syscall { return SyscallOf(n.Arch, n.Nr) }

// fallbackPoll bounds a poll when no eventfd could be made to wake it:
// then cancellation and Close are noticed within this time.
const fallbackPoll = 100 // ms

// Listener wraps one notification fd. Its methods are safe for concurrent
// use; Receive calls take turns, answers run in parallel.
type Listener struct {
	fd   int
	wake int // eventfd that wakes the receiver in poll; -1 if none

	turn   chan struct{} // one receiver polls and RECVs at a time
	done   chan struct{} // closed by Close
	closed atomic.Bool

	// mu is held shared by every operation on fd and exclusively by Close,
	// so the fd number is never closed (and reused) under a running ioctl.
	mu sync.RWMutex
}

// NewListener wraps a notification fd; the Listener owns it from now on.
func NewListener(fd int) *Listener {
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		wake = -1 // out of fds: poll with a timeout instead
	}
	return &Listener{
		fd:   fd,
		wake: wake,
		turn: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
}

// Fd returns the notification fd, for handing a copy to a keeper. It stays
// valid until Close; do not close it.
func (l *Listener) Fd() int { return l.fd }

// Close wakes a blocked Receive, waits for operations in flight and closes
// the fd. Operations after Close return ErrClosed.
func (l *Listener) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	close(l.done)
	l.wakeup()
	l.mu.Lock()
	defer l.mu.Unlock()
	err := unix.Close(l.fd)
	if l.wake >= 0 {
		unix.Close(l.wake)
	}
	if err != nil {
		return fmt.Errorf("close notification fd: %w", err)
	}
	return nil
}

func (l *Listener) wakeup() {
	if l.wake < 0 {
		return
	}
	var one = [8]byte{1} // little-endian uint64 1
	unix.Write(l.wake, one[:])
}

func (l *Listener) drain() {
	var buf [8]byte
	unix.Read(l.wake, buf[:])
}

// acquire takes the shared lock for one operation, failing once closed.
func (l *Listener) acquire() error {
	l.mu.RLock()
	if l.closed.Load() {
		l.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// Receive blocks until a notification arrives, ctx ends, the Listener is
// closed (ErrClosed), or no target is left (ErrNoTargets).
func (l *Listener) Receive(ctx context.Context) (Notif, error) {
	select {
	case l.turn <- struct{}{}:
	case <-ctx.Done():
		return Notif{}, ctx.Err()
	case <-l.done:
		return Notif{}, ErrClosed
	}
	defer func() { <-l.turn }()
	if err := l.acquire(); err != nil {
		return Notif{}, err
	}
	defer l.mu.RUnlock()
	stop := context.AfterFunc(ctx, l.wakeup)
	defer stop()

	timeout := -1
	if l.wake < 0 {
		timeout = fallbackPoll
	}
	fds := []unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}, {Fd: int32(l.wake), Events: unix.POLLIN}}
	if l.wake < 0 {
		fds = fds[:1]
	}
	for {
		if l.closed.Load() {
			return Notif{}, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return Notif{}, err
		}
		fds[0].Revents = 0
		if len(fds) > 1 {
			fds[1].Revents = 0
		}
		_, err := unix.Poll(fds, timeout)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return Notif{}, fmt.Errorf("poll notification fd: %w", err)
		}
		if len(fds) > 1 && fds[1].Revents != 0 {
			// A wake-up, perhaps for a receiver that has since left: drain
			// and re-check our own context and the closed flag.
			l.drain()
		}
		ev := fds[0].Revents
		switch {
		case ev&unix.POLLIN != 0:
			n, err := l.recv()
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINTR) {
				continue // withdrawn between poll and RECV
			}
			return n, err
		case ev&unix.POLLHUP != 0:
			return Notif{}, ErrNoTargets
		case ev&(unix.POLLERR|unix.POLLNVAL) != 0:
			return Notif{}, fmt.Errorf("poll notification fd: revents %#x", ev)
		}
	}
}

func (l *Listener) recv() (Notif, error) {
	var req seccompNotif // RECV insists on a zeroed buffer
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(l.fd), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&req)))
	if e != 0 {
		return Notif{}, fmt.Errorf("seccomp notif recv: %w", e)
	}
	return Notif{
		ID:    req.id,
		PID:   req.pid,
		Flags: req.flags,
		Nr:    req.data.nr,
		Arch:  req.data.arch,
		IP:    req.data.ip,
		Args:  req.data.args,
	}, nil
}

// ioctl runs one ioctl on the fd under the shared lock.
func (l *Listener) ioctl(req uintptr, arg unsafe.Pointer) (uintptr, error) {
	if err := l.acquire(); err != nil {
		return 0, err
	}
	defer l.mu.RUnlock()
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(l.fd), req, uintptr(arg))
	if e != 0 {
		return 0, e
	}
	return r, nil
}

// gone turns ENOENT into an error that is both ErrGone and ENOENT.
func gone(what string, id uint64, err error) error {
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s %d: %w (%w)", what, id, ErrGone, err)
	}
	return fmt.Errorf("%s %d: %w", what, id, err)
}

// IDValid reports whether notification id is still pending: nil if so,
// ErrGone if the target died or a signal withdrew the call.
func (l *Listener) IDValid(id uint64) error {
	if _, err := l.ioctl(unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id)); err != nil {
		return gone("notification id valid", id, err)
	}
	return nil
}

func (l *Listener) send(resp *seccompNotifResp) error {
	if _, err := l.ioctl(unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(resp)); err != nil {
		return gone("answer notification", resp.id, err)
	}
	return nil
}

// Continue lets the kernel run the trapped call as if it had not been
// trapped (SECCOMP_USER_NOTIF_FLAG_CONTINUE).
func (l *Listener) Continue(id uint64) error {
	return l.send(&seccompNotifResp{id: id, flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE})
}

// Return answers the trapped call: it fails with errno, or, if errno is 0,
// returns val.
func (l *Listener) Return(id uint64, val int64, errno unix.Errno) error {
	resp := seccompNotifResp{id: id, val: val}
	if errno != 0 {
		resp.val = 0
		resp.error = -int32(errno)
	}
	return l.send(&resp)
}

// AddFD installs our fd src into the target. With setFD it lands at fd
// number target, and whatever the target had there is closed atomically
// (SECCOMP_ADDFD_FLAG_SETFD); otherwise at the lowest free number. With send
// the same ioctl also answers the call, with the new fd number as its return
// value (SECCOMP_ADDFD_FLAG_SEND): right for calls that return an fd, but
// connect, bind and listen would return that number instead of 0. cloexec
// sets O_CLOEXEC on the new fd. It returns the fd number in the target.
func (l *Listener) AddFD(id uint64, src int, target int, setFD, send, cloexec bool) (int, error) {
	req := seccompNotifAddfd{id: id, srcfd: uint32(src)}
	if setFD {
		req.flags |= unix.SECCOMP_ADDFD_FLAG_SETFD
		req.newfd = uint32(target)
	}
	if send {
		req.flags |= unix.SECCOMP_ADDFD_FLAG_SEND
	}
	if cloexec {
		req.newfdFlags = unix.O_CLOEXEC
	}
	r, err := l.ioctl(unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&req))
	if err != nil {
		return -1, gone("add fd to notification", id, err)
	}
	return int(r), nil
}

// SetSyncWakeUp asks the kernel to wake the target on the answering CPU
// (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, Linux 6.6): it saves a cross-CPU
// wake-up per trap when one broker thread receives and answers.
func (l *Listener) SetSyncWakeUp() error {
	if err := l.acquire(); err != nil {
		return err
	}
	defer l.mu.RUnlock()
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(l.fd), unix.SECCOMP_IOCTL_NOTIF_SET_FLAGS, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
	if e != 0 {
		return fmt.Errorf("seccomp notif set_flags sync_wake_up: %w", e)
	}
	return nil
}

// ReadMem reads n bytes at addr from the notification's target and then
// checks that the notification is still pending, so that the bytes are
// known to come from the target and not from a process that reused its
// thread id (see the package-level ReadMem).
func (l *Listener) ReadMem(nt Notif, addr uint64, n int) ([]byte, error) {
	b, err := ReadMem(int(nt.PID), addr, n)
	if err != nil {
		return nil, err
	}
	if err := l.IDValid(nt.ID); err != nil {
		return nil, err
	}
	return b, nil
}
