package seccomp

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
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

// interruptEvery is how often a receiver being stopped is signalled while
// it is still inside the RECV ioctl: a signal sent just before the thread
// entered the ioctl is lost, the next one is not.
const interruptEvery = time.Millisecond

// Listener wraps one notification fd. Its methods are safe for concurrent
// use; several receivers may wait at once (each gets other notifications)
// and answers run in parallel.
//
// A receiver waits in the RECV ioctl itself, the way gVisor's systrap
// waits: no poll(2) first and no hand-off to another thread, so a
// notification costs one system call to receive (see Receiver).
type Listener struct {
	fd int

	done   chan struct{} // closed by Close
	closed atomic.Bool

	// mu is held shared by every operation on fd and exclusively by Close,
	// so the fd number is never closed (and reused) under a running ioctl.
	mu sync.RWMutex

	rmu       sync.Mutex
	receivers map[*Receiver]struct{}
}

// NewListener wraps a notification fd; the Listener owns it from now on.
func NewListener(fd int) *Listener {
	return &Listener{fd: fd, done: make(chan struct{}), receivers: map[*Receiver]struct{}{}}
}

// Fd returns the notification fd, for handing a copy to a keeper. It stays
// valid until Close; do not close it.
func (l *Listener) Fd() int { return l.fd }

// Close stops the receivers, waits for operations in flight and closes the
// fd. Operations after Close return ErrClosed.
func (l *Listener) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	close(l.done)
	l.rmu.Lock()
	rs := make([]*Receiver, 0, len(l.receivers))
	for r := range l.receivers {
		rs = append(rs, r)
	}
	l.rmu.Unlock()
	for _, r := range rs {
		r.stop()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := unix.Close(l.fd); err != nil {
		return fmt.Errorf("close notification fd: %w", err)
	}
	return nil
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

// nullFD is what a stopped receiver's fd number is pointed at.
var nullFD = sync.OnceValues(func() (int, error) {
	return unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
})

// Receiver receives a Listener's notifications on one OS thread, blocked
// in the RECV ioctl on an fd of its own (a dup). Make it on a goroutine
// locked to its thread (runtime.LockOSThread), receive only from that
// goroutine, and Close it there.
//
// Stopping it (its context ends, or the Listener closes): the ioctl
// returns ENOENT once every supervised task has exited (Linux 6.x), and
// nothing else wakes it but a notification or a signal, and the Go
// runtime's handlers are installed with SA_RESTART, so a signal alone
// only restarts the call. So the receiver's fd number is first pointed at
// /dev/null (dup3), then the thread is signalled (SIGURG, which the
// runtime takes for a preemption request and otherwise ignores): the
// restarted ioctl finds /dev/null there and fails, and the receiver sees
// it was stopped.
type Receiver struct {
	l        *Listener
	fd       int // our dup of l.fd
	pid, tid int
	ctx      context.Context
	unwatch  func() bool
	stopped  atomic.Bool
	inside   atomic.Bool // in the ioctl, or about to enter it
	stopOnce sync.Once
	enoent   int // ENOENT answers in a row
}

// NewReceiver binds a receiver of l to the calling thread, until ctx ends
// or the Listener closes.
func (l *Listener) NewReceiver(ctx context.Context) (*Receiver, error) {
	if err := l.acquire(); err != nil {
		return nil, err
	}
	fd, err := unix.FcntlInt(uintptr(l.fd), unix.F_DUPFD_CLOEXEC, 0)
	l.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("dup notification fd: %w", err)
	}
	r := &Receiver{l: l, fd: fd, pid: unix.Getpid(), tid: unix.Gettid(), ctx: ctx}
	l.rmu.Lock()
	l.receivers[r] = struct{}{}
	l.rmu.Unlock()
	if l.closed.Load() {
		r.stop()
	}
	r.unwatch = context.AfterFunc(ctx, r.stop)
	return r, nil
}

// stop makes the receiver leave the ioctl and return; it waits until it
// has (see Receiver).
func (r *Receiver) stop() {
	r.stopOnce.Do(func() {
		r.stopped.Store(true)
		if null, err := nullFD(); err == nil {
			unix.Dup3(null, r.fd, unix.O_CLOEXEC)
		}
	})
	for r.inside.Load() {
		// ESRCH: the thread is gone; nothing to wake.
		if unix.Tgkill(r.pid, r.tid, unix.SIGURG) != nil {
			return
		}
		time.Sleep(interruptEvery)
	}
}

// Close releases the receiver: its fd and its context watch. Call it on
// the receiver's goroutine once Receive has returned for good.
func (r *Receiver) Close() {
	r.unwatch()
	r.l.rmu.Lock()
	delete(r.l.receivers, r)
	r.l.rmu.Unlock()
	unix.Close(r.fd)
}

// Receive blocks until a notification arrives, the receiver's context
// ends, the Listener is closed (ErrClosed), or no target is left
// (ErrNoTargets). Call it on the receiver's thread.
func (r *Receiver) Receive() (Notif, error) {
	for {
		r.inside.Store(true)
		if r.stopped.Load() {
			r.inside.Store(false)
			if r.l.closed.Load() {
				return Notif{}, ErrClosed
			}
			return Notif{}, r.ctx.Err()
		}
		var n Notif
		var err error
		if r.enoent < 2 {
			n, err = recvOn(r.fd)
		} else {
			// RECV keeps answering ENOENT: every target may be gone
			// (a zombie not yet reaped holds POLLHUP back), or the
			// notifications were withdrawn. Wait for either.
			if err = waitReadable(r.fd); err == nil {
				n, err = recvOn(r.fd)
			}
		}
		r.inside.Store(false)
		switch {
		case err == nil:
			r.enoent = 0
			return n, nil
		case errors.Is(err, ErrNoTargets):
			return Notif{}, err
		case r.stopped.Load():
			continue // the check above returns
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOENT):
			// Withdrawn between the wake-up and RECV, or no target left.
			if hup, perr := hungUp(r.fd); perr == nil && hup {
				return Notif{}, ErrNoTargets
			}
			r.enoent++
			continue
		}
		return Notif{}, err
	}
}

// hungUp reports whether a notification fd has no target left (POLLHUP).
func hungUp(fd int) (bool, error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, 0); err != nil {
		return false, err
	}
	return fds[0].Revents&unix.POLLHUP != 0, nil
}

// waitReadable polls until a notification is ready (nil), no target is
// left (ErrNoTargets), or a signal (EINTR).
func waitReadable(fd int) error {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, -1); err != nil {
		return err
	}
	switch ev := fds[0].Revents; {
	case ev&unix.POLLIN != 0:
		return nil
	case ev&unix.POLLHUP != 0:
		return ErrNoTargets
	default:
		return fmt.Errorf("poll notification fd: revents %#x", ev)
	}
}

// Receive is a one-off receive on the calling goroutine, locked to its
// thread for the call (see Receiver; a loop should keep one Receiver).
func (l *Listener) Receive(ctx context.Context) (Notif, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r, err := l.NewReceiver(ctx)
	if err != nil {
		return Notif{}, err
	}
	defer r.Close()
	return r.Receive()
}

// recvOn receives one notification on fd, blocking.
func recvOn(fd int) (Notif, error) {
	var req seccompNotif // RECV insists on a zeroed buffer
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&req)))
	if e != 0 {
		if e == unix.EINTR || e == unix.ENOENT {
			return Notif{}, e // the loop's business: no wrapping, no allocation
		}
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
