// Package seccomp is the seccomp user-notification plumbing of Slim's
// connection broker, in pure Go (golang.org/x/sys/unix; no cgo, no
// libseccomp). It holds the filter, its installation, the notification fd
// (receive, answer, install fds into the target), access to the target's
// memory and fds, and the agent socket on which OCI runtimes and Slim's
// launcher hand notification fds to slimd. What to do with a notification
// (the verdict, the socket swap, policy) is the broker's business, not this
// package's.
//
// # The filter
//
// Filter builds a classic-BPF program over struct seccomp_data:
//
//   - The architecture is checked first. A foreign architecture (i386 system
//     calls from an x86_64 process through int 0x80, arm32 compat on arm64) is
//     answered SECCOMP_RET_KILL_PROCESS: its syscall numbers mean other calls
//     (on i386 connect also hides inside socketcall), so allowing them would
//     let connect, bind and io_uring_setup around the traps, and answering
//     every call with an errno leaves a process that cannot even exit. A
//     killed process is visible (SIGSYS, audit log); 32-bit userlands are not
//     supported on the fast path. This is also libseccomp's default for a
//     "bad arch".
//   - On x86_64, x32 calls (nr >= 0x40000000, __X32_SYSCALL_BIT) are answered
//     ENOSYS, which is what every kernel built without CONFIG_X86_X32 (most
//     distributions) answers too, so programs see a familiar failure rather
//     than a trap-free way around the filter. The same test catches nr = -1.
//   - connect, bind and listen are SECCOMP_RET_USER_NOTIF, always.
//   - sendto (flags = args[3]), sendmsg (flags = args[2]) and sendmmsg
//     (flags = args[3]) are trapped only when their flags carry MSG_FASTOPEN,
//     decided in the filter, so ordinary sends never leave the kernel. The
//     flags argument is a C int: only the low 32 bits of the register are
//     compared (the kernel truncates the rest), which on the little-endian
//     architectures we support is the 32-bit word at offsetof(args[i]).
//     sendmmsg is not in the design's list, but a MSG_FASTOPEN sendmmsg
//     connects exactly like sendto does; the broker may simply CONTINUE it.
//   - io_uring_setup is answered EPERM (as Docker's default profile does):
//     io_uring would connect, bind and send around the traps.
//   - Everything else is SECCOMP_RET_ALLOW, in the kernel, without a round
//     trip: a trap's round trip costs about 14 µs between two processes on
//     the test VM (BenchmarkNotifRoundTrip), so nothing on the data path is
//     trapped.
//
// # Installation
//
// The filter, no_new_privs and the seccomp mode are per thread. Install
// works on the calling thread only: the caller has locked its goroutine to
// the OS thread (runtime.LockOSThread) and execs on that thread. A Go
// process's other threads, and the threads the Go runtime starts later (from
// its template thread), do not carry the filter; InstallWith with AllThreads
// sets it on every thread (SECCOMP_FILTER_FLAG_TSYNC, which together with
// NEW_LISTENER needs SECCOMP_FILTER_FLAG_TSYNC_ESRCH).
//
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19) is asked for, and
// dropped only if the kernel refuses it (EINVAL). Without it any signal
// (Go's own preemption signal SIGURG included, measured about once per
// 3k-20k connects) withdraws a notification the broker is already handling:
// its later answer fails with ENOENT and the restarted call arrives again.
// With it, a notification that has been received is no longer interruptible
// by non-fatal signals (they stay pending until the call is answered), while
// one that has not been received yet still is (withdrawn, then restarted).
// A held signal is delivered as soon as the call is answered. If the answer
// was CONTINUE and the continued call blocks (a connect still waiting for
// the handshake), that signal interrupts it, and with SA_RESTART the call
// is restarted and traps again: a new id for the same thread, fd and
// address, on a socket that is already connecting. A call answered with a
// value (Return, AddFD with send) is not restarted. The tests check all of
// this on the running kernel.
//
// The launcher must connect to the agent before installing the filter
// (DialAgent, then Install, then AgentConn.Send): after Install, its own
// connect would trap into a supervisor that does not have the fd yet.
//
// # The listener
//
// A Receiver waits in SECCOMP_IOCTL_NOTIF_RECV itself, on a thread of its
// own and an fd of its own (a dup), the way gVisor's systrap waits: no
// poll first and no hand-off, so receiving costs one system call. Measured
// on 6.18: the blocked ioctl returns ENOENT once the last task using the
// filter has exited, and every later RECV returns ENOENT at once, while
// POLLHUP may show only a little later (the tests saw it both before and
// after the zombie was reaped). So ENOENT is followed by a zero-timeout
// poll: POLLHUP is ErrNoTargets; otherwise (a call withdrawn between the
// wake-up and RECV) RECV is tried again, and after two ENOENTs in a row the
// receiver waits in poll for POLLIN or POLLHUP. RECV ignores O_NONBLOCK and
// has no timeout, and the Go runtime installs its signal handlers with
// SA_RESTART, which restarts the ioctl after a signal: to stop a receiver
// (its context ends, or Close), its fd number is pointed at /dev/null
// (dup3) and its thread is sent SIGURG (which the runtime takes for a
// preemption request), repeatedly until it has left the ioctl; the
// restarted ioctl then fails on /dev/null. Several receivers may wait on
// one listener (each gets other notifications); answers run concurrently.
// BenchmarkNotifRoundTrip compares this loop with a C supervisor.
//
// Close waits for ioctls in flight and then closes the fd, so that an fd
// number is never reused under a running ioctl; an answer attempted after
// Close fails with ErrClosed (a closed notification fd would have turned it
// into EBADF). Closing the last copy of a notification fd makes every
// pending and future trapped call of the targets fail with ENOSYS: slimd
// must never be the only holder (see the design's fd keeper).
//
// # The target
//
// The notification's pid is a thread id in the receiver's pid namespace, so
// PidFD uses PIDFD_THREAD (Linux 6.9). ReadMem (process_vm_readv) and GetFD
// (pidfd_getfd) need CAP_SYS_PTRACE over the target. The thread id may be
// reused once the target is gone: after reading the target's memory or
// opening its pidfd, check SECCOMP_IOCTL_NOTIF_ID_VALID (Listener.IDValid,
// or Listener.ReadMem that does both); only then are the bytes known to be
// the target's. The target's close-on-exec flag is only visible in
// /proc/TID/fdinfo/FD (the pidfd_getfd copy always has O_CLOEXEC); CloexecOf
// reads it with one open and one small read, FDInfo keeps the file open and
// re-reads it (one pread, which follows whatever the fd number holds).
//
// # The agent socket
//
// runc (>= 1.1) and crun implement linux.seccomp.listenerPath the same way:
// a SOCK_STREAM connection to the path, one sendmsg carrying the JSON of
// specs.ContainerProcessState with the fds in one SCM_RIGHTS message, fds[i]
// named by state.Fds[i] ("seccompFd"); runc neither waits for a reply nor
// closes the connection promptly (it leaks the conn until exit), and its
// example agent reads one message of at most 4 KiB. The agent therefore
// reads until the bytes form one complete JSON value (not until EOF), bounded
// by MaxAgentMessage and a per-connection deadline, accepts at most
// MaxAgentFDs fds, checks that "seccompFd" is a seccomp notification fd, and
// closes every received fd on any rejection. After the handler returns it
// writes one acknowledgement byte: runc ignores it, Slim's launcher
// (AgentConn.Send) waits for it, so it knows slimd holds the fd, and an agent
// that closes without it rejected the message.
//
// # Kernel features
//
//	SECCOMP_RET_USER_NOTIF, NEW_LISTENER      5.0
//	pidfd_getfd                               5.6
//	SECCOMP_IOCTL_NOTIF_ADDFD                 5.9
//	SECCOMP_ADDFD_FLAG_SEND                   5.14
//	SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV    5.19
//	SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP        6.6
//	PIDFD_THREAD                              6.9
//
// The kernel parts build on Linux only; elsewhere the package holds only its
// errors.
package seccomp

import "errors"

var (
	// ErrNoTargets is returned by Receive when every process under the
	// filter is gone (POLLHUP): no notification can arrive any more.
	ErrNoTargets = errors.New("seccomp: no targets left")
	// ErrGone means the notification is no longer valid: the target died,
	// or a signal withdrew the call. Errors wrapping it also wrap ENOENT.
	ErrGone = errors.New("seccomp: notification gone")
	// ErrClosed is returned for operations on a closed Listener.
	ErrClosed = errors.New("seccomp: listener closed")
	// ErrNotSupported is returned for an architecture or system the filter
	// does not know.
	ErrNotSupported = errors.New("seccomp: not supported")
	// ErrAgentRejected is returned by AgentConn.Send when the agent closed
	// the connection without acknowledging the message.
	ErrAgentRejected = errors.New("seccomp: agent rejected the message")
	// ErrAgentInUse is returned by NewAgent when another process is serving
	// the socket path.
	ErrAgentInUse = errors.New("seccomp: agent socket in use")
)
