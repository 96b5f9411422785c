package bpf

import (
	"log/slog"
	"net/netip"
)

// Config says where the programs attach and where their state is pinned.
type Config struct {
	// Cgroup is slimd's cgroup v2 directory. The programs attach here and
	// only callers in exactly this cgroup pass the guard. It must not be the
	// root cgroup, and no container may live below it (descendants inherit
	// the programs, so the guard would refuse their own connect and bind).
	// A socket belongs to the cgroup of the process that created it, so
	// slimd must be in this cgroup before it creates host sockets; a Load
	// with another cgroup moves the programs, and sockets created in the
	// old one lose rewrite and guard.
	Cgroup string
	// PinDir is a bpffs directory owned by this slimd, e.g.
	// /sys/fs/bpf/slim/<node>. Load creates it, and mounts bpffs at
	// /sys/fs/bpf first when PinDir is below it and nothing is mounted.
	PinDir string
	// BlockBits is log2 of the port block size (1..15). It is cluster-wide:
	// port blocks of every host are looked up with the same mask.
	BlockBits int
	// Logger receives the verifier log of a failed load at debug level.
	// Nil discards.
	Logger *slog.Logger
}

// PortBlock is one published port block: source ports
// [Start, Start+size) of HostIP belong to the endpoint with virtual IP VIP.
type PortBlock struct {
	HostIP netip.Addr
	Start  uint16
	VIP    netip.Addr
}

// Listener is one published listener: host port HostPort on HostIP serves
// the virtual address VIP.
type Listener struct {
	HostIP   netip.Addr
	HostPort uint16
	VIP      netip.AddrPort
	// InMap6: the entry is in the IPv6 listener map (where PutListener
	// puts IPv6 virtual addresses; a map from an older version may hold
	// an entry in the other one).
	InMap6 bool
}
