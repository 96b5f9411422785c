package broker

import (
	"context"
	"io"
	"net/netip"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/keeper"
)

// Ports hands out host ports: source ports from the containers' port
// blocks and listener ports from the host's listener blocks.
type Ports interface {
	// Blocks returns the container's source port blocks.
	Blocks(c *Container) []api.PortBlock
	// Grow claims one more block for the container's connections of one
	// family (its blocks of that family ran out, or it has none).
	Grow(ctx context.Context, c *Container, ipv6 bool) error
	// ListenerPort reserves a free host port for a new listener.
	ListenerPort(ctx context.Context) (uint16, error)
	// ReleaseListenerPort returns a listener port.
	ReleaseListenerPort(port uint16)
}

// Publisher publishes fast-path listeners in the store. Publish may fail
// after the record was written; withdrawing what is not there succeeds.
type Publisher interface {
	Publish(ctx context.Context, l api.Listener) error
	Withdraw(ctx context.Context, vip netip.Addr, port uint16) error
}

// Tagger records the virtual addresses of a host listener for the BPF
// programs that rewrite getsockname/getpeername.
type Tagger interface {
	SetSocket(fd int, local, peer netip.AddrPort) error
}

// Permits is the BPF side of a swapped connect (*bpf.Programs): the
// permit that lets the application's own connect() on a host socket
// through, once, to the approved destination, and the port blocks' use.
type Permits interface {
	ArmConn(fd int, c bpf.Conn) error
	ConnState(fd int) (bpf.ConnState, error)
	// PortsInUse is how many live client host sockets are bound to ports
	// of the local block starting at start.
	PortsInUse(start uint16) uint32
	// EnsureListener makes sure the connect program knows the listener
	// (it refuses permits to anything else): a system call only the first
	// time.
	EnsureListener(hostIP netip.Addr, hostPort uint16, vip netip.AddrPort) error
}

// Recorder is BPF programs in the containers' cgroups that note what an
// application socket is and which options the application set on it, so
// that the connect path need not ask the socket (a system call per
// question).
type Recorder interface {
	// Record attaches the recorders to a cgroup until the Closer closes.
	Record(cgroup string) (io.Closer, error)
	// AppSocket returns the record of a socket, if there is a complete
	// one.
	AppSocket(fd int) (bpf.AppSocket, bool, error)
	// MarkListened notes in a socket's record that its listen() was
	// left to the kernel.
	MarkListened(fd int) error
}

// Policy is network policy at connect(): whether a TCP connection from a
// container's address to dst is allowed (the client's egress and the
// server's ingress), decided from memory. A denied connect fails with
// ECONNREFUSED at once, on the fast path and off it.
type Policy interface {
	AllowTCP(src netip.Addr, dst netip.AddrPort) bool
}

// Resolver finds the container behind a network namespace (by inode).
type Resolver interface {
	ContainerByNetns(ino uint64) (*Container, bool)
}

// Keeper holds copies of the notification fds so that they outlive slimd:
// if the last copy closes, the container's trapped calls fail with ENOSYS.
type Keeper interface {
	Put(key string, meta []byte, fd int) error
	Drop(key string) error
}

// Journal records notifications from receipt to answer, so that a slimd
// that dies in between leaves them to its successor to finish
// (*keeper.Journal).
type Journal interface {
	Record(e keeper.Entry) (slot int, ok bool)
	Done(slot int)
}
