// Package broker is Slim's connection broker (the paper's SlimRouter): it
// supervises container processes through seccomp user notifications and,
// for TCP connections to published virtual addresses, swaps the
// container's socket for a host socket that slimd creates, binds and
// connects itself. The data path is then host networking; the application
// sees only virtual addresses (the BPF programs rewrite them).
//
// What it decides and how:
//
//   - connect(): eligible when the socket is TCP, belongs to the
//     container's own network namespace (compared by netns cookie, so a
//     namespace nested inside the container is not eligible), and the
//     destination is a virtual address with a published listener (or
//     loopback / the container's own address with a listener of its own).
//     The sockaddr is read once; slimd connects its own copy of it, so
//     there is no time-of-check/time-of-use gap. The host socket is bound to
//     the host's underlay address and a port of the container's port block
//     (SO_REUSEADDR: one port serves many destinations; EADDRNOTAVAIL means
//     the 4-tuple is taken, so the next port is tried). It is connected
//     non-blocking and installed over the application's fd number. A
//     non-blocking caller gets EINPROGRESS; a blocking caller gets
//     CONTINUE, so the kernel waits for the handshake natively in the
//     application's own thread and no broker goroutine is held (the
//     restarted connect on a connecting socket waits and returns the
//     result).
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
