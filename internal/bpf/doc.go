// Package bpf loads Slim's cgroup BPF programs, attaches them to slimd's
// cgroup and keeps their state: address virtualization (containers see
// virtual addresses on the host sockets slimd gives them) and the guard
// (containers cannot use those sockets for anything but their connection).
// It leaves to others: the broker creates the host sockets and calls
// SetSocket (listeners) or ArmConn (clients); the store's watchers call PutPortBlock/PutListener for every
// host's port blocks and listeners; seccomp traps listen() and refuses
// io_uring_setup, which no hook here sees or needs to.
//
// # Design
//
// All programs attach to one cgroup, slimd's (Config.Cgroup). sock_addr and
// sockopt hooks run the programs of the cgroup the socket was created in,
// whoever calls, so they act on exactly the sockets slimd created and on the
// sockets the kernel accepts on slimd's listeners (those inherit the
// listener's cgroup). Hence slimd must move itself into Config.Cgroup before
// it creates host sockets, and the cgroup must be a leaf holding only slimd:
// descendants inherit the programs, so a container below it would have its
// own connect() and bind() refused. Load refuses the root cgroup.
//
// Address virtualization (getsockname4/6, getpeername4/6) looks in order at:
//  1. the socket's sk_storage entry (SetSocket), for sockets slimd made:
//     client sockets and listeners (a listener shows the address the
//     application bound, wildcard included);
//  2. otherwise the host address itself: getsockname tries the listeners map
//     (host IP, host port) -> (VIP, port) and then the port blocks; getpeername
//     tries the port blocks (host IP, port &^ (block size-1)) -> VIP, keeping
//     the port, and then the listeners. This covers accepted sockets, and
//     client sockets without an entry.
//
// The rewrite applies to every caller, slimd included: slimd sees virtual
// addresses on sockets it has set up, and must use its own records or
// sock_diag for host addresses. Sockets no map knows (slimd's etcd and API
// sockets) are left alone; their ports are outside the reserved port block
// and listener ranges.
//
// Maps hold addresses as 16 bytes, IPv4 in v4-mapped form, so one map serves
// both families and an AF_INET6 socket talking IPv4 (v4-mapped) finds the
// IPv4 entries. A v4 hook only ever shows an IPv4 address; a v6 hook shows an
// IPv4 one v4-mapped. The port block size is one cluster-wide value
// (Config.BlockBits) kept in the config map; a Load with another size clears
// the port blocks, whose keys it invalidates.
//
// Client sockets: the broker arms a pooled host socket (ArmConn: an
// sk_storage entry in slim_conns) and installs it over the application's
// fd; the application's own connect() then runs slim_connect4/6, which let
// it through once, to the destination the permit names: it picks a port
// of the container's blocks whose 4-tuple to the listener is free
// (bpf_skc_lookup_tcp; a shared cursor per block set in slim_ports, so
// concurrent connects try different ports), binds it (bpf_bind), rewrites
// the destination to the host listener and marks the socket used, for
// good. slim_ports also counts the ports bound by live client sockets
// (cgroup/sock_release gives them back); slimd reads it memory-mapped to
// claim blocks before they run out.
//
// The guard: connect4/6 and bind4/6 refuse (EPERM) every caller whose cgroup
// (bpf_get_current_cgroup_id) is not exactly slimd's, except for that one
// permitted connect; a used socket, even disconnected, is refused; setsockopt refuses
// options that steer host routing, firewalling, QoS or socket selection, and
// privileged ones (the list, with reasons, is in slim.c). sendmsg4/6 programs
// would add nothing: they run for UDP only, and TCP fast open goes through
// the connect hooks. No getsockopt program.
//
// State outlives slimd: maps are pinned by name in Config.PinDir and every
// attachment is a bpf_link pinned there as link_<program>. Close drops only
// this process's handles; a later Load re-opens the maps and swaps its
// programs into the pinned links (link.Update); Unpin detaches and removes
// everything.
//
// # Measured (Linux 6.18, 2-vCPU VM)
//
//   - accept()/accept4() return the address the getpeername hook writes.
//   - TCP fast open (sendto with MSG_FASTOPEN) runs the connect4/6 hook: with
//     connect4 allowing, it connects; denying, it fails with EPERM. A
//     deny-all sendmsg4/6 program does not stop it.
//   - connect(AF_UNSPEC) by a non-slimd caller succeeds (no hook runs); the
//     next connect() is refused (TestPermit).
//   - A connect program may bpf_setsockopt(SO_REUSEADDR) and bpf_bind an
//     explicit port of the reserved range, and bpf_set_retval(-EADDRNOTAVAIL)
//     before refusing; sock_release programs may read sk_storage.
//   - setsockopt with optlen above a page: when the program leaves optlen as
//     it is, 6.18 logs "bpf setsockopt: ignoring program buffer" and uses the
//     caller's buffer (older kernels fail with EFAULT); the program sets
//     optlen to 0, the documented way.
//   - Loading a BPF LSM program as root fails with EPERM: Features.LSM is
//     false, the guard here is the only line.
//   - getpeername costs about 150 ns more than without programs (1.3 us per
//     raw call on this VM). Program run time from BPF statistics: 85 ns
//     (sk_storage hit), 95 ns (port block), 135 ns (no entry), after
//     subtracting the 77 ns a trivial program shows (the statistics' clock
//     reads). See BenchmarkGetpeername.
package bpf
