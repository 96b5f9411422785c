// Package keeper keeps slimd's seccomp notification fds alive across slimd
// restarts and crashes, and journals the notifications slimd has received
// but not yet answered. It holds fds and bytes; what the fds mean and how a
// notification is answered is the broker's business.
//
// # Why
//
// If the last holder of a seccomp notification fd closes it, every trapped
// system call of the container (the one in flight and all later ones) fails
// with ENOSYS, for good. So slimd is never the only holder: a small keeper
// process, started by slimd (a re-exec of its own binary, detached with
// setsid, Start) holds a dup of every notification fd (Client.Put) and lives
// on when slimd dies. While no slimd runs, trapped calls simply block: the
// kernel queues their notifications, and the next slimd, which takes the fds
// back (Client.Fetch), receives them all.
//
// Notifications the dead slimd had already received (SECCOMP_IOCTL_NOTIF_RECV)
// but not answered are never delivered again, yet they stay answerable by id
// while the target waits. slimd therefore records each notification in a
// Journal before handling it and marks it Done after answering; a successor
// reads the leftovers (OpenJournal) and finishes them. Notification ids are
// never reused by a filter (a 64-bit counter from a random start), so
// answering a leftover that the predecessor did answer after all only fails
// with ENOENT.
//
// # The keeper process
//
// Serve listens on a unix SOCK_SEQPACKET socket (mode 0600; it is bound in a
// private directory, chmod'ed and renamed into place, so it is never
// reachable with looser permissions). A lock file next to it (path + ".lock",
// flock, held for the keeper's life and released by the kernel when the
// keeper dies) makes a second keeper on the same path fail with ErrRunning
// without any race, and lets a new keeper replace a stale socket safely.
// Peers must have our uid or uid 0 (SO_PEERCRED).
//
// The keeper ignores SIGTERM, SIGINT and SIGHUP, and Start puts it in its
// own session, so neither a signal to slimd's process group nor a kill of
// slimd takes it along. It ends when its context ends (in practice: SIGKILL).
// Watch out for supervisors that kill a whole cgroup on stop or restart:
// systemd's default KillMode=control-group, and also KillMode=mixed (SIGKILL
// to the rest of the cgroup once the main process is gone), kill the keeper
// with slimd, and so does a container runtime stopping slimd's container.
// The keeper must then live outside slimd's cgroup (slimd's --keeper-cgroup
// moves it there), or slimd's unit needs KillMode=process, or the fds go to
// systemd's own fd store (FileDescriptorStoreMax) instead. Likewise a slimd that is PID 1 of
// a pid namespace takes every process of that namespace with it.
//
// The keeper closes on its own any held fd that reports POLLHUP: for a
// notification fd this means every process under the filter has exited, so
// nothing leaks when containers end while slimd is down. It watches with
// epoll, edge-triggered and with no requested events (only EPOLLHUP and
// EPOLLERR are reported), so a pending notification (EPOLLIN) never wakes it
// and an fd stuck in an error state cannot make it spin. Each fd is removed
// from the epoll set before it is closed: epoll keys on the open file, which
// slimd's copies keep alive, so a closed but still registered fd would keep
// reporting. Fds that cannot be polled (regular files) are held unwatched.
// Note that a fd that reports POLLHUP right away (an unconnected stream
// socket, a pipe without writers) is dropped right away.
//
// # Protocol
//
// One request, one reply, in SOCK_SEQPACKET messages (the message boundaries
// carry the framing and each message its own SCM_RIGHTS). Every message is
// an 8-byte header (op, protocol version, key length as little-endian uint16,
// meta length as little-endian uint32) followed by the key and the meta
// bytes, at most MaxKey and MaxMeta. Requests: hello (answered ok, so Dial
// knows a keeper answers), put (exactly one fd), drop, fetch (answered by one
// item message per held fd, each carrying one fd, then an end message with
// the count). Replies: ok, error (text in meta), item, end. A message that
// is truncated, malformed, of another protocol version, or carries fds where
// none belong makes the keeper close that connection and every fd that came
// with it; held fds are not touched. The version byte lets a future slimd
// notice that the long-lived keeper it found is older than itself.
//
// Fetch sends dups made one at a time, so the keeper never holds more than
// one extra fd, and an fd dropped meanwhile is simply skipped. Received fds
// are close-on-exec on both sides (MSG_CMSG_CLOEXEC).
//
// # The journal
//
// A journal is a file mapped MAP_SHARED: a 4 KiB header (magic, version,
// slot size, slot count) and fixed 128-byte slots (two cache lines, so
// neighbouring slots written by different CPUs do not share a line).
// Recording is a few stores to memory, with no system call and no fsync: the
// page cache outlives the process, and a machine crash takes the
// notifications with it. Keep the file on tmpfs (/run): on a disk file
// system the first store to a page after each writeback faults (the kernel
// write-protects clean pages to track them), which costs a microsecond now
// and then. The file is fully allocated (fallocate) and pre-faulted
// (MAP_POPULATE) at open, so no store allocates a block (a store into a
// hole of a full disk would be SIGBUS) or reads a page in.
//
// Each slot starts with a state word: 0 free, 1 being written, anything else
// is the seal, a 64-bit hash of the entry with bit 1 set (so it is never 0 or
// 1). Record claims a free slot with a compare-and-swap 0 -> 1, writes the
// fields, and publishes them by storing the seal last (an atomic store).
// Done stores 0. A slot is a leftover only if its state equals the seal of
// its fields: a slimd killed in the middle of Record leaves 1 or a mismatch,
// which the next OpenJournal ignores and frees. Record starts probing at a
// slot picked by the notification id: ids of one filter are consecutive, so
// a session's in-flight entries sit in neighbouring slots, and no word is
// shared by all Records (a shared count of used slots doubled the cost with
// two CPUs recording; a full journal costs a scan of every slot instead,
// and answers ok=false). Leftovers keep their slots until ClearAll, which
// frees only them, so slimd may start handling new notifications before it
// has finished its predecessor's.
//
// Measured on this 2-vCPU VM (Linux 6.18, BenchmarkJournal, 4096 slots):
// Record+Done 37 ns on one CPU; 21 ns per pair (wall) with both CPUs
// recording, i.e. no contention.
//
// The journal file is locked (flock) while open: a second slimd on the same
// file gets ErrJournalBusy, and a successor that gets the lock knows its
// predecessor is gone. Entries are stored in native byte order: a journal
// never leaves its machine.
//
// # Kernel features
//
//	SOCK_SEQPACKET unix sockets          2.6.4
//	SECCOMP_RET_USER_NOTIF               5.0
//	POLLHUP when the last target exits   later than 5.0 ("seccomp: notify
//	                                     about unused filter"); tested on 6.18
//	MAP_POPULATE, fallocate              2.6
//
// On a kernel without the hang-up, held notification fds of ended
// containers stay until slimd drops them.
//
// The package builds on Linux only; elsewhere every call returns
// ErrNotSupported.
package keeper

import "errors"

const (
	// MaxKey bounds a key in bytes.
	MaxKey = 256
	// MaxMeta bounds the opaque bytes stored with an fd.
	MaxMeta = 4096
)

var (
	// ErrNoKeeper means no keeper answers at the socket path, or the
	// connection to it was lost (the keeper died): Start a new one and Put
	// every fd again.
	ErrNoKeeper = errors.New("keeper: no keeper running")
	// ErrRunning is returned by Serve when another keeper serves the path.
	ErrRunning = errors.New("keeper: a keeper is already running")
	// ErrInvalid is returned for a key, meta or fd the protocol cannot carry.
	ErrInvalid = errors.New("keeper: invalid argument")
	// ErrRejected wraps an error reply from the keeper (for example: it
	// holds too many fds already).
	ErrRejected = errors.New("keeper: request rejected")
	// ErrJournalBusy is returned by OpenJournal when another process (or
	// another Journal) has the file open.
	ErrJournalBusy = errors.New("keeper: journal in use")
	// ErrJournalFormat is returned by OpenJournal for a file that is not a
	// journal of this version. Remove it to start afresh (its leftovers are
	// lost).
	ErrJournalFormat = errors.New("keeper: not a journal of this version")
	// ErrNotSupported is returned on systems other than Linux.
	ErrNotSupported = errors.New("keeper: not supported on this system")
)

// Held is one fd the keeper holds, as Fetch returns it.
type Held struct {
	Key  string
	Meta []byte // opaque bytes stored with the fd, at most MaxMeta
	Fd   int    // a dup owned by the caller (close-on-exec)
}

// Entry is one in-flight notification in the journal.
type Entry struct {
	Session uint64 // which notification fd, in slimd's own numbering
	ID      uint64 // the notification id
	PID     uint32 // the trapped thread id
	Nr      int32  // the system call number
	Arch    uint32 // the AUDIT_ARCH_* of the call
	Args    [6]uint64
}
