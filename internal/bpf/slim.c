//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//
// Slim's cgroup BPF programs: address virtualization (getsockname/getpeername
// rewrite) and the guard (connect/bind/setsockopt) for the host sockets that
// slimd creates and hands to containers. All programs attach to slimd's own
// cgroup: sock_addr and sockopt hooks run the programs of the cgroup the
// *socket* was created in, whoever calls, so they see exactly slimd's sockets
// (and the sockets the kernel accepts on slimd's listeners).
//
// The file is self-contained: it declares the few UAPI types and constants it
// needs instead of including <linux/bpf.h>, whose <asm/types.h> is
// arch-specific and not on the BPF target's include path. Socket option
// values are those of asm-generic (amd64 and arm64, the bpfel targets).
//
// Addresses are 16 bytes, IPv4 in v4-mapped form (::ffff:a.b.c.d), held as
// four 32-bit words in network byte order so that they copy straight into and
// out of bpf_sock_addr.user_ip6. Ports in maps are in host byte order.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// UAPI (include/uapi/linux/bpf.h). Layouts are stable ABI.
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_SK_STORAGE = 24,
};
#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_F_MMAPABLE (1U << 10)

#define __bpf_md_ptr(type, name) \
	union {                  \
		type name;       \
		__u64 : 64;      \
	} __attribute__((aligned(8)))

// The head of struct bpf_sock: the fields the programs read.
struct bpf_sock {
	__u32 bound_dev_if;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 mark;
	__u32 priority;
	__u32 src_ip4;
	__u32 src_ip6[4];
	__u32 src_port;
	__be16 dst_port;
	__u16 : 16;
	__u32 dst_ip4;
	__u32 dst_ip6[4];
	__u32 state;
};

// struct bpf_sock_tuple: the 4-tuple of a socket lookup, as a packet
// arriving at the socket would carry it (saddr is the peer).
struct bpf_sock_tuple {
	union {
		struct {
			__be32 saddr;
			__be32 daddr;
			__be16 sport;
			__be16 dport;
		} ipv4;
		struct {
			__be32 saddr[4];
			__be32 daddr[4];
			__be16 sport;
			__be16 dport;
		} ipv6;
	};
};

struct sockaddr_in {
	__u16 sin_family;
	__be16 sin_port;
	__be32 sin_addr;
	__u8 sin_zero[8];
};

struct sockaddr_in6 {
	__u16 sin6_family;
	__be16 sin6_port;
	__be32 sin6_flowinfo;
	__u32 sin6_addr[4];
	__u32 sin6_scope_id;
};

#define BPF_F_CURRENT_NETNS (-1L)
#define BPF_TCP_TIME_WAIT 6
#define EADDRNOTAVAIL 99

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define IPPROTO_MPTCP 262
#define BPF_SK_STORAGE_GET_F_CREATE (1ULL << 0)

struct bpf_sock_addr {
	__u32 user_family;
	__u32 user_ip4;
	__u32 user_ip6[4];
	__u32 user_port;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 msg_src_ip4;
	__u32 msg_src_ip6[4];
	__bpf_md_ptr(struct bpf_sock *, sk);
};

struct bpf_sockopt {
	__bpf_md_ptr(struct bpf_sock *, sk);
	__bpf_md_ptr(void *, optval);
	__bpf_md_ptr(void *, optval_end);
	__s32 level;
	__s32 optname;
	__s32 optlen;
	__s32 retval;
};

// Socket levels and the options the programs set themselves
// (asm-generic/socket.h); the guard's list is guard.go's (guard.h).
#define SOL_SOCKET 1
#define SO_REUSEADDR 2

// TC_PRIO_INTERACTIVE: the highest SO_PRIORITY an unprivileged socket may set.
#define MAX_UNPRIV_PRIORITY 6

// The sockopt hook copies at most one page of optval; a larger optlen must be
// reset to 0 ("use the caller's buffer") or the kernel may fail the call
// (Documentation/bpf/prog_cgroup_sockopt.rst, "Large optval"). 4096 is the
// smallest page size; resetting a smaller optlen to 0 is harmless too.
#define SOCKOPT_PAGE 4096

// Verdicts of cgroup hooks: 0 rejects the syscall with EPERM, 1 continues.
#define DENY 0
#define ALLOW 1

// vaddr flags.
#define VADDR_SET 1 // the address is to be shown; otherwise leave it alone

// The loader writes the single entry before it attaches any program.
struct cfg {
	__u64 slimd_cgroup; // cgroup v2 id of slimd: the only trusted caller
	__u32 block_bits;   // log2 of the port block size
	__u32 gen;          // bumped by every load: see struct appsock
};

// Key of slim_blocks (port = first port of the block) and slim_listeners
// (port = host port).
struct hostport {
	__u32 addr[4];
	__u16 port;
	__u16 pad;
};

// A virtual address: value of slim_listeners, halves of sockaddrs.
struct vaddr {
	__u32 addr[4];
	__u16 port;
	__u16 flags;
};

// Value of slim_blocks: the virtual IP of the endpoint owning the block.
struct vip {
	__u32 addr[4];
};

// Value of slim_sockets: what getsockname and getpeername show.
struct sockaddrs {
	struct vaddr local;
	struct vaddr peer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} slim_config SEC(".maps");

// Per-socket virtual addresses, filled by slimd with the socket fd as key,
// freed by the kernel with the socket.
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sockaddrs);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} slim_sockets SEC(".maps");

// A hash map keyed by (host IP, host port), pinned by name so that the
// maps outlive slimd. Sized for a cluster of 2,000 hosts of 100 containers
// (200,000 remote port blocks, docs/scale.md); not preallocated, so an
// entry costs memory only once it exists. Load grows the pinned maps of an
// earlier, smaller version in place.
#define HOSTPORT_MAP(name, value_type)                   \
	struct {                                         \
		__uint(type, BPF_MAP_TYPE_HASH);         \
		__uint(map_flags, BPF_F_NO_PREALLOC);    \
		__uint(max_entries, 1 << 18);            \
		__type(key, struct hostport);            \
		__type(value, value_type);               \
		__uint(pinning, LIBBPF_PIN_BY_NAME);     \
	} name SEC(".maps")

// (host IP, first port of block) -> virtual IP of the block's endpoint.
HOSTPORT_MAP(slim_blocks, struct vip);

// (host IP, host port) -> (virtual IP, virtual port) of a published listener:
// its IPv4 virtual address here, its IPv6 one in slim_listeners6.
HOSTPORT_MAP(slim_listeners, struct vaddr);
HOSTPORT_MAP(slim_listeners6, struct vaddr);

// Per application TCP (or MPTCP) socket, made when the socket is created in
// a container's cgroup (slim_record_create) and updated by its setsockopt
// and connect calls: what slimd would otherwise ask the socket it fetches
// on connect, one system call per question. (slim_appsocks, the map of
// earlier versions, had no flags.)
struct appsock {
	__u64 netns_cookie; // of the netns the socket was created in
	__u64 opts;         // optbit() of every option the application set
	__u32 gen;          // cfg.gen at creation: a later slimd's recorders
	                    // missed the calls made while none was attached
	__u16 family;
	__u16 protocol;
	__u32 flags; // APPSOCK_*
	__u32 pad;
};

// appsock flags.
#define APPSOCK_CONNECTED 1 // the kernel ran a connect on it (in the container)
#define APPSOCK_LISTENED 2  // slimd left a listen() on it to the kernel

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct appsock);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} slim_apps SEC(".maps");

// The most port blocks a connect permit names.
#define MAX_BLOCKS 4

// conn states.
#define CONN_ARMED 1 // slimd installed the socket: one connect may use it
#define CONN_USED 2  // that connect ran: no other, ever (sticky)

// Value of slim_conns: a client host socket slimd made for a container and
// its connect permit. slimd fills it (state CONN_ARMED) before installing
// the socket over the application's fd and answering CONTINUE; the
// application's own connect() then runs slim_connect4/6, which checks the
// destination against want, picks a free source port of the container's
// blocks, binds, rewrites the destination to the host listener and sets
// CONN_USED. So slimd makes no bind or connect of its own, the handshake
// runs in the application's thread (its errno, timeout and signal
// semantics), and a thread that changed the sockaddr after slimd read it
// gets EPERM.
struct conn {
	__u64 since;        // bpf_ktime_get_boot_ns at connect
	struct vaddr local; // getsockname: the container's address and the port chosen
	struct vaddr peer;  // getpeername: the destination the application named
	__u32 want[4];      // the destination the application's connect must name
	__u32 dst[4];       // the host listener: where the connect goes (IPv4, v4-mapped)
	__u32 src[4];       // this host's underlay address, bound with a port of the blocks
	__u16 want_port;
	__u16 dst_port;
	__u16 blocks[MAX_BLOCKS]; // first ports of the container's blocks to use
	__u16 nblocks;
	__u16 state;
	__u16 port; // the source port bound, counted in slim_ports until release
	__u16 pad;
	__u32 pad2;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} slim_conns SEC(".maps");

// Value of slim_ports, indexed by (port >> block_bits): a local port block's
// cursor (the next port to try, shared by every connect from the block's
// container, so that concurrent connects try different ports) and the number
// of client host sockets bound to its ports and not yet released (slimd
// reads it, memory-mapped, to claim another block before these run out).
struct portuse {
	__u32 cursor;
	__u32 inuse;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 32768); // 65536 ports >> block_bits (>= 1)
	__type(key, __u32);
	__type(value, struct portuse);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} slim_ports SEC(".maps");

static __always_inline struct cfg *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&slim_config, &zero);
}

// caller_is_slimd reports whether the calling task is in slimd's cgroup.
// Unconfigured (id 0) trusts nobody; the loader configures before attaching.
static __always_inline int caller_is_slimd(void)
{
	struct cfg *cfg = config();

	return cfg && cfg->slimd_cgroup != 0 &&
	       bpf_get_current_cgroup_id() == cfg->slimd_cgroup;
}

// ---------------------------------------------------------------------------
// Address virtualization.

static __always_inline int is_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

// show writes v into the address the syscall returns. A v4 hook can only show
// an IPv4 (v4-mapped) address; anything else is left as it is.
static __always_inline void show(struct bpf_sock_addr *ctx,
				 const struct vaddr *v, int v6)
{
	if (v6) {
		ctx->user_ip6[0] = v->addr[0];
		ctx->user_ip6[1] = v->addr[1];
		ctx->user_ip6[2] = v->addr[2];
		ctx->user_ip6[3] = v->addr[3];
	} else {
		if (!is_v4mapped(v->addr))
			return;
		ctx->user_ip4 = v->addr[3];
	}
	ctx->user_port = bpf_htons(v->port);
}

static __always_inline int lookup_listener(struct hostport *k,
					   struct vaddr *out, int v6)
{
	struct vaddr *v = bpf_map_lookup_elem(v6 ? (void *)&slim_listeners6 :
						   (void *)&slim_listeners, k);

	if (!v)
		return 0;
	*out = *v;
	return 1;
}

static __always_inline int lookup_block(struct hostport *k,
					struct vaddr *out)
{
	struct cfg *cfg = config();
	struct vip *vip;
	__u16 port = k->port;
	__u32 bits;

	if (!cfg)
		return 0;
	bits = cfg->block_bits;
	if (bits > 15)
		return 0;
	k->port = port & ~((1U << bits) - 1);
	vip = bpf_map_lookup_elem(&slim_blocks, k);
	k->port = port;
	if (!vip)
		return 0;
	out->addr[0] = vip->addr[0];
	out->addr[1] = vip->addr[1];
	out->addr[2] = vip->addr[2];
	out->addr[3] = vip->addr[3];
	out->port = port; // a client keeps its port: only the IP is virtual
	return 1;
}

// peer_v6 reports whether an accepted socket's client connected from an
// IPv6 port block, i.e. to the server's IPv6 virtual address: then the
// server's side shows its IPv6 address, else its IPv4 one.
static __always_inline int peer_v6(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct hostport k = {};
	struct vaddr v = {};

	if (!sk)
		return 0;
	// Host connections are IPv4 (also those of a dual-stack socket,
	// whose dst_ip4 is set for a v4-mapped peer). An IPv6 host address
	// is not looked up here; the listener lookups below try both maps.
	k.addr[2] = bpf_htonl(0x0000ffff);
	k.addr[3] = sk->dst_ip4;
	k.port = bpf_ntohs(sk->dst_port);
	return lookup_block(&k, &v) && !is_v4mapped(v.addr);
}

// rewrite shows the virtual local (peer=0) or peer (peer=1) address of the
// socket. Sockets slimd created carry an sk_storage entry; the others
// (accepted sockets) are recognised by their host address: a published
// listener's host port, or a source port inside a published port block.
static __always_inline int rewrite(struct bpf_sock_addr *ctx, int peer, int v6)
{
	struct hostport k = {};
	struct vaddr v = {};
	struct sockaddrs *s;
	struct conn *c;
	int found;

	c = bpf_sk_storage_get(&slim_conns, ctx->sk, 0, 0);
	if (c) {
		struct vaddr *cv = peer ? &c->peer : &c->local;

		if (cv->flags & VADDR_SET)
			show(ctx, cv, v6);
		return ALLOW;
	}
	s = bpf_sk_storage_get(&slim_sockets, ctx->sk, 0, 0);
	if (s) {
		struct vaddr *sv = peer ? &s->peer : &s->local;

		if (sv->flags & VADDR_SET)
			show(ctx, sv, v6);
		return ALLOW;
	}

	if (v6) {
		k.addr[0] = ctx->user_ip6[0];
		k.addr[1] = ctx->user_ip6[1];
		k.addr[2] = ctx->user_ip6[2];
		k.addr[3] = ctx->user_ip6[3];
	} else {
		k.addr[2] = bpf_htonl(0x0000ffff);
		k.addr[3] = ctx->user_ip4;
	}
	k.port = bpf_ntohs(ctx->user_port);

	// Try first what an accepted socket has on that side: the listener's
	// host port locally, a client's port block on the peer side.
	if (peer)
		found = lookup_block(&k, &v) || lookup_listener(&k, &v, 0) ||
			lookup_listener(&k, &v, 1);
	else
		found = (peer_v6(ctx) ? lookup_listener(&k, &v, 1) ||
						lookup_listener(&k, &v, 0) :
					lookup_listener(&k, &v, 0) ||
						lookup_listener(&k, &v, 1)) ||
			lookup_block(&k, &v);
	if (found)
		show(ctx, &v, v6);
	return ALLOW;
}

SEC("cgroup/getsockname4")
int slim_getsockname4(struct bpf_sock_addr *ctx)
{
	return rewrite(ctx, 0, 0);
}

SEC("cgroup/getsockname6")
int slim_getsockname6(struct bpf_sock_addr *ctx)
{
	return rewrite(ctx, 0, 1);
}

SEC("cgroup/getpeername4")
int slim_getpeername4(struct bpf_sock_addr *ctx)
{
	return rewrite(ctx, 1, 0);
}

SEC("cgroup/getpeername6")
int slim_getpeername6(struct bpf_sock_addr *ctx)
{
	return rewrite(ctx, 1, 1);
}

// ---------------------------------------------------------------------------
// The guard. Only slimd may connect or bind its sockets, except for the one
// connect a permit allows (slim_conns). The connect hooks also run for
// sendto/sendmsg with MSG_FASTOPEN (tcp_sendmsg_fastopen goes through
// __inet_stream_connect) and for io_uring connect; the bind hooks for
// io_uring bind. They do not run for listen() nor for connect(AF_UNSPEC):
// seccomp traps listen() instead, and a disconnected socket stays
// CONN_USED, so it can never connect again.

// How many source ports one connect tries before it gives up with
// EADDRNOTAVAIL: every port tried has a live connection to the same
// listener. slimd claims another block long before (see slim_ports).
#define SCAN_TRIES 64

// port_busy reports whether the 4-tuple (src:port, dst) is taken by a live
// socket. A TIME_WAIT one is not: a connect from an explicitly bound port
// reuses it when TCP timestamps make that safe (tcp_twsk_unique).
static __always_inline int port_busy(struct bpf_sock_addr *ctx,
				     struct conn *c, __u16 port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	int busy;

	t.ipv4.saddr = c->dst[3];
	t.ipv4.daddr = c->src[3];
	t.ipv4.sport = bpf_htons(c->dst_port);
	t.ipv4.dport = bpf_htons(port);
	sk = bpf_skc_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	busy = sk->state != BPF_TCP_TIME_WAIT;
	bpf_sk_release(sk);
	return busy;
}

// bind_port binds the socket to src:port; nonzero on failure.
static __always_inline int bind_port(struct bpf_sock_addr *ctx,
				     struct conn *c, __u16 port, int v6)
{
	if (v6) {
		struct sockaddr_in6 sa = {};

		sa.sin6_family = AF_INET6;
		sa.sin6_port = bpf_htons(port);
		sa.sin6_addr[0] = c->src[0];
		sa.sin6_addr[1] = c->src[1];
		sa.sin6_addr[2] = c->src[2];
		sa.sin6_addr[3] = c->src[3];
		return bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	}
	struct sockaddr_in sa = {};

	sa.sin_family = AF_INET;
	sa.sin_port = bpf_htons(port);
	sa.sin_addr = c->src[3];
	return bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
}

static __always_inline int wanted(struct bpf_sock_addr *ctx, struct conn *c,
				  int v6)
{
	if (ctx->user_port != bpf_htons(c->want_port))
		return 0;
	if (v6)
		return ctx->user_ip6[0] == c->want[0] &&
		       ctx->user_ip6[1] == c->want[1] &&
		       ctx->user_ip6[2] == c->want[2] &&
		       ctx->user_ip6[3] == c->want[3];
	return is_v4mapped(c->want) && ctx->user_ip4 == c->want[3];
}

// published reports whether the permit's destination is a listener in the
// BPF listener maps.
static __always_inline int published(struct conn *c)
{
	struct hostport k = {};

	k.addr[0] = c->dst[0];
	k.addr[1] = c->dst[1];
	k.addr[2] = c->dst[2];
	k.addr[3] = c->dst[3];
	k.port = c->dst_port;
	return bpf_map_lookup_elem(&slim_listeners, &k) ||
	       bpf_map_lookup_elem(&slim_listeners6, &k);
}

// use_permit runs the one connect a container may make on a host socket:
// to the destination slimd approved, from a free port of its blocks.
static __always_inline int use_permit(struct bpf_sock_addr *ctx, int v6)
{
	struct cfg *cfg = config();
	struct portuse *pu;
	struct conn *c;
	__u32 bits, n, key, idx, b;
	__u16 port = 0;
	int one = 1, i;

	if (!cfg || !ctx->sk)
		return DENY;
	c = bpf_sk_storage_get(&slim_conns, ctx->sk, 0, 0);
	if (!c || c->state != CONN_ARMED || !wanted(ctx, c, v6))
		return DENY;
	// Whatever happens next, this was the one try.
	c->state = CONN_USED;
	// Where it goes must be a published listener (which slimd validated
	// against its host's record), on an IPv4 underlay address that is not
	// loopback: a permit slimd was tricked into is still no way to the
	// host's own services.
	if (!is_v4mapped(c->dst) || (bpf_ntohl(c->dst[3]) >> 24) == 127 ||
	    !published(c))
		return DENY;
	bits = cfg->block_bits;
	n = c->nblocks;
	if (bits < 1 || bits > 15 || n < 1 || n > MAX_BLOCKS)
		return DENY;
	key = c->blocks[0] >> bits;
	pu = bpf_map_lookup_elem(&slim_ports, &key);
	if (!pu)
		return DENY;
	// One port serves many destinations: SO_REUSEADDR lets the explicit
	// binds of different connections share it.
	if (bpf_setsockopt(ctx, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)))
		return DENY;
	for (i = 0; i < SCAN_TRIES; i++) {
		idx = __sync_fetch_and_add(&pu->cursor, 1);
		// b < n <= MAX_BLOCKS; the mask is for the verifier.
		b = ((idx >> bits) % n) & (MAX_BLOCKS - 1);
		port = c->blocks[b] + (idx & ((1U << bits) - 1));
		if (!port_busy(ctx, c, port) && !bind_port(ctx, c, port, v6))
			goto bound;
	}
	bpf_set_retval(-EADDRNOTAVAIL);
	return DENY;
bound:
	key = port >> bits;
	pu = bpf_map_lookup_elem(&slim_ports, &key);
	if (pu) {
		__sync_fetch_and_add(&pu->inuse, 1);
		c->port = port;
	}
	c->local.port = port;
	c->local.flags |= VADDR_SET;
	c->since = bpf_ktime_get_boot_ns();
	if (v6) {
		ctx->user_ip6[0] = c->dst[0];
		ctx->user_ip6[1] = c->dst[1];
		ctx->user_ip6[2] = c->dst[2];
		ctx->user_ip6[3] = c->dst[3];
	} else {
		ctx->user_ip4 = c->dst[3];
	}
	ctx->user_port = bpf_htons(c->dst_port);
	return ALLOW;
}

SEC("cgroup/connect4")
int slim_connect4(struct bpf_sock_addr *ctx)
{
	return caller_is_slimd() ? ALLOW : use_permit(ctx, 0);
}

SEC("cgroup/connect6")
int slim_connect6(struct bpf_sock_addr *ctx)
{
	return caller_is_slimd() ? ALLOW : use_permit(ctx, 1);
}

// slim_release gives back a client host socket's source port.
SEC("cgroup/sock_release")
int slim_release(struct bpf_sock *ctx)
{
	struct cfg *cfg = config();
	struct portuse *pu;
	struct conn *c;
	__u32 key;

	if (!cfg || cfg->block_bits < 1 || cfg->block_bits > 15)
		return ALLOW;
	c = bpf_sk_storage_get(&slim_conns, ctx, 0, 0);
	if (!c || !c->port)
		return ALLOW;
	key = c->port >> cfg->block_bits;
	c->port = 0;
	pu = bpf_map_lookup_elem(&slim_ports, &key);
	if (pu)
		__sync_fetch_and_sub(&pu->inuse, 1);
	return ALLOW;
}

SEC("cgroup/bind4")
int slim_bind4(struct bpf_sock_addr *ctx)
{
	return caller_is_slimd() ? ALLOW : DENY;
}

SEC("cgroup/bind6")
int slim_bind6(struct bpf_sock_addr *ctx)
{
	return caller_is_slimd() ? ALLOW : DENY;
}

static __always_inline int optval_int(struct bpf_sockopt *ctx, int *val)
{
	void *p = ctx->optval;
	void *end = ctx->optval_end;

	if (p + sizeof(int) > end)
		return 0;
	*val = *(int *)p;
	return 1;
}

// The guard's rules (guard.go's Rule*); guard.h, generated from guard.go,
// says which option gets which.

// tos_too_high: IP precedence 5-7 (CS5/EF, CS6, CS7).
static __always_inline int tos_too_high(int tos)
{
	return tos >= 0 && ((tos >> 5) & 7) >= 5;
}

static __always_inline int rule_non_empty(struct bpf_sockopt *ctx)
{
	return ctx->optlen > 0;
}

static __always_inline int rule_priority(struct bpf_sockopt *ctx)
{
	int val;

	return optval_int(ctx, &val) && (val < 0 || val > MAX_UNPRIV_PRIORITY);
}

// rule_tos: an int, or a single byte.
static __always_inline int rule_tos(struct bpf_sockopt *ctx)
{
	int val;

	if (optval_int(ctx, &val))
		return tos_too_high(val);
	if (ctx->optlen >= 1 && ctx->optval + 1 <= ctx->optval_end)
		return tos_too_high(*(__u8 *)ctx->optval);
	return 0;
}

// rule_tclass: -1 is the kernel's default.
static __always_inline int rule_tclass(struct bpf_sockopt *ctx)
{
	int val;

	return optval_int(ctx, &val) && val != -1 && tos_too_high(val);
}

#include "guard.h"

// With optlen above a page the program sees only the first page and must
// hand the call back with optlen 0, and the kernel then reads the value again
// from the caller's memory, which another thread may have changed after the
// check: a value-checked option with such an optlen is refused.
SEC("cgroup/setsockopt")
int slim_setsockopt(struct bpf_sockopt *ctx)
{
	if (!caller_is_slimd() &&
	    (dangerous(ctx) || (ctx->optlen > SOCKOPT_PAGE && value_checked(ctx))))
		return DENY;
	// Pass through: optval untouched. Only an optval beyond the page the
	// kernel copied must be handed back as "use the caller's buffer".
	if (ctx->optlen > SOCKOPT_PAGE)
		ctx->optlen = 0;
	return ALLOW;
}

// ---------------------------------------------------------------------------
// Recorders, attached to containers' cgroups (not slimd's): they only
// observe, and always allow.

// optbit folds an option into one of 64 bits. Collisions only make slimd
// read an option the application did not set; the broker computes the same
// function (internal/broker/sockopt_linux.go).
static __always_inline __u64 optbit(int level, int optname)
{
	return 1ULL << ((__u32)(optname * 7 + level) & 63);
}

SEC("cgroup/sock_create")
int slim_record_create(struct bpf_sock *ctx)
{
	struct cfg *cfg = config();
	struct appsock *a;

	if (!cfg || ctx->type != SOCK_STREAM ||
	    (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_MPTCP) ||
	    (ctx->family != AF_INET && ctx->family != AF_INET6))
		return ALLOW;
	a = bpf_sk_storage_get(&slim_apps, ctx, 0,
			       BPF_SK_STORAGE_GET_F_CREATE);
	if (a) {
		a->netns_cookie = bpf_get_netns_cookie(ctx);
		a->opts = 0;
		a->gen = cfg->gen;
		a->family = ctx->family;
		a->protocol = ctx->protocol;
		a->flags = 0;
	}
	return ALLOW;
}

SEC("cgroup/setsockopt")
int slim_record_setsockopt(struct bpf_sockopt *ctx)
{
	struct appsock *a;

	if (ctx->optlen > SOCKOPT_PAGE)
		ctx->optlen = 0;
	if (!ctx->sk)
		return ALLOW;
	a = bpf_sk_storage_get(&slim_apps, ctx->sk, 0, 0);
	if (a)
		__sync_fetch_and_or(&a->opts, optbit(ctx->level, ctx->optname));
	return ALLOW;
}

// record_connect notes that a container socket went to the kernel's
// connect (the overlay): swapping it later would drop that connection.
static __always_inline int record_connect(struct bpf_sock_addr *ctx)
{
	struct appsock *a;

	if (!ctx->sk)
		return ALLOW;
	a = bpf_sk_storage_get(&slim_apps, ctx->sk, 0, 0);
	if (a)
		__sync_fetch_and_or(&a->flags, APPSOCK_CONNECTED);
	return ALLOW;
}

SEC("cgroup/connect4")
int slim_record_connect4(struct bpf_sock_addr *ctx)
{
	return record_connect(ctx);
}

SEC("cgroup/connect6")
int slim_record_connect6(struct bpf_sock_addr *ctx)
{
	return record_connect(ctx);
}

char _license[] SEC("license") = "Dual MIT/GPL";
