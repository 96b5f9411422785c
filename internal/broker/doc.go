// Package broker is Slim's connection broker (the paper's SlimRouter): it
// supervises container processes through seccomp user notifications and,
// for TCP connections to published virtual addresses, swaps the
// container's socket for a host socket that slimd creates, binds and
// connects itself. The data path is then host networking; the application
// sees only virtual addresses (the BPF programs rewrite them).
//
// What it decides and how:
//
//   - connect(): eligible when the socket is TCP (or MPTCP, swapped for a
//     TCP host socket: a container has one path to its peers), belongs to
//     the container's own network namespace (compared by netns cookie, so
//     a namespace nested inside the container is not eligible), has never
//     connected or listened, and the destination is a virtual address
//     with a published listener (or loopback / the container's own
//     address with a listener of its own). The sockaddr is read once.
//     slimd takes a ready-made host socket (a pool by family and
//     O_NONBLOCK), copies the options the application set that differ
//     from a fresh socket's (refusing the values the guard refuses: the
//     connection then stays on the overlay), arms it with a permit in the
//     BPF map slim_conns (the destination the application named, the
//     listener's host address, the container's port blocks), installs it
//     over the application's fd number and answers CONTINUE. The kernel
//     runs the application's own connect() on the host socket, in its
//     thread: the BPF connect program checks the destination against the
//     permit, picks a free port of the blocks, binds, rewrites the
//     destination to the host listener and marks the socket used for
//     good. So the errno, EINPROGRESS, SO_SNDTIMEO and signals are the
//     kernel's, no broker thread waits for a handshake, and a thread that
//     rewrites the sockaddr after slimd read it gets EPERM. An endpoint's
//     first port blocks come with it; more are claimed in the background
//     before they fill up (blocks.go).
//   - listen(): a socket bound to the container's virtual address or the
//     wildcard gets a host listener on a host port from this host's
//     listener blocks (SO_REUSEPORT groups for processes sharing a port),
//     installed over the application's fd, and `virtual IP:port -> host
//     IP:host port` is published on the host's lease. Listeners that close
//     are found by a periodic sock_diag scan and withdrawn.
//   - bind(), sendto/sendmsg with MSG_FASTOPEN: CONTINUE for container
//     sockets; refused on host sockets (the guard).
//
// Everything not eligible is answered CONTINUE: the kernel runs the call in
// the container's namespace, over the overlay, which is never more than
// the container could do without us. A failing swap also falls back to
// CONTINUE, so the fast path never breaks an application.
package broker
