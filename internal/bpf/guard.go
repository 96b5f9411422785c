package bpf

import "encoding/binary"

// The guard's list of socket options: what a container may not set on the
// host sockets slimd gives it. It is the one source for both places that
// decide: slim.c's setsockopt program (guard.h is generated from
// GuardedOptions by guardgen.go, go generate) and the broker, which
// must not copy onto a host socket, as slimd, whom the guard trusts, a
// value the container set on its own socket and the guard would refuse
// (Refuses).
//
// The host socket lives in the host network namespace, so the kernel's own
// CAP_NET_ADMIN/CAP_NET_RAW checks there test the container against the
// host's user namespace, which a container without a user namespace and
// with those capabilities passes although its grant was meant for its own
// netns. Refused: options that steer the host's routing, firewalling, QoS or
// socket selection, and the privileged ones. Everything else (TCP_NODELAY,
// keepalive, buffer sizes up to the sysctl limits, SO_LINGER,
// TCP_CONGESTION within net.ipv4.tcp_allowed_congestion_control,
// TCP_ULP/kTLS, timestamps, ...) only affects the caller's own connection.

// Rule says how the guard judges one option.
type Rule uint8

// Rules.
const (
	// RuleAlways refuses the option whatever its value.
	RuleAlways Rule = iota + 1
	// RuleNonEmpty refuses it unless it is cleared (optlen 0): IP options
	// and IPv6 extension headers.
	RuleNonEmpty
	// RulePriority refuses SO_PRIORITY outside 0..6: above is
	// CAP_NET_ADMIN (TC_PRIO_INTERACTIVE is the highest unprivileged).
	RulePriority
	// RuleTOS refuses an IP precedence of 5-7 (CS5/EF, CS6, CS7): those
	// classes are kept for real-time and network control traffic that QoS
	// on the host and the underlay may prioritize. Lower classes (CS1-CS4,
	// AFxx, the legacy low-delay bits ssh uses) and ECN pass. The value is
	// an int or a single byte.
	RuleTOS
	// RuleTClass is RuleTOS for IPV6_TCLASS, an int where -1 means the
	// kernel's default.
	RuleTClass
)

// Socket levels (asm-generic: amd64 and arm64).
const (
	solIP     = 0
	solSocket = 1
	solTCP    = 6
	solIPv6   = 41
)

// GuardedOption is one option the guard judges.
type GuardedOption struct {
	Name       string
	Level, Opt int
	Rule       Rule
	Why        string
}

// GuardedOptions is the guard's list (values: asm-generic, amd64 and
// arm64).
var GuardedOptions = []GuardedOption{
	{"SO_BINDTODEVICE", solSocket, 25, RuleAlways, "egress device: bypasses host routing"},
	{"SO_BINDTOIFINDEX", solSocket, 62, RuleAlways, "egress device, by index"},
	{"SO_MARK", solSocket, 36, RuleAlways, "fwmark selects host routing tables and nft rules"},
	{"SO_SNDBUFFORCE", solSocket, 32, RuleAlways, "beyond net.core.wmem_max (CAP_NET_ADMIN)"},
	{"SO_RCVBUFFORCE", solSocket, 33, RuleAlways, "beyond net.core.rmem_max (CAP_NET_ADMIN)"},
	{"SO_REUSEPORT", solSocket, 15, RuleAlways, "reuseport groups pick which host socket gets a host port's connections: slimd owns them"},
	{"SO_ATTACH_REUSEPORT_CBPF", solSocket, 51, RuleAlways, "steers a host port's connections"},
	{"SO_ATTACH_REUSEPORT_EBPF", solSocket, 52, RuleAlways, "steers a host port's connections"},
	{"SO_DETACH_REUSEPORT_BPF", solSocket, 68, RuleAlways, "slimd owns reuseport steering"},
	{"SO_BUSY_POLL", solSocket, 46, RuleAlways, "spins host CPUs on device queues"},
	{"SO_PREFER_BUSY_POLL", solSocket, 69, RuleAlways, "busy polling (raising it needs CAP_NET_ADMIN)"},
	{"SO_BUSY_POLL_BUDGET", solSocket, 70, RuleAlways, "busy polling"},
	{"SO_PRIORITY", solSocket, 12, RulePriority, "0..6 are unprivileged; above is CAP_NET_ADMIN"},
	{"IP_TRANSPARENT", solIP, 19, RuleAlways, "non-local bind and spoofed source"},
	{"IP_FREEBIND", solIP, 15, RuleAlways, "non-local bind"},
	{"IP_UNICAST_IF", solIP, 50, RuleAlways, "egress interface, like SO_BINDTOIFINDEX"},
	{"IP_IPSEC_POLICY", solIP, 16, RuleAlways, "per-socket IPsec policy overrides the host's"},
	{"IP_XFRM_POLICY", solIP, 17, RuleAlways, "per-socket IPsec policy overrides the host's"},
	{"IP_OPTIONS", solIP, 4, RuleNonEmpty, "source routing (LSRR/SSRR); clearing is fine"},
	{"IP_TOS", solIP, 1, RuleTOS, "QoS classes the host and underlay may prioritize"},
	{"IPV6_TRANSPARENT", solIPv6, 75, RuleAlways, "non-local bind and spoofed source"},
	{"IPV6_FREEBIND", solIPv6, 78, RuleAlways, "non-local bind"},
	{"IPV6_UNICAST_IF", solIPv6, 76, RuleAlways, "egress interface"},
	{"IPV6_IPSEC_POLICY", solIPv6, 34, RuleAlways, "per-socket IPsec policy overrides the host's"},
	{"IPV6_XFRM_POLICY", solIPv6, 35, RuleAlways, "per-socket IPsec policy overrides the host's"},
	{"IPV6_RTHDR", solIPv6, 57, RuleNonEmpty, "routing header: source routing"},
	{"IPV6_2292RTHDR", solIPv6, 5, RuleNonEmpty, "routing header: source routing"},
	{"IPV6_HOPOPTS", solIPv6, 54, RuleNonEmpty, "extension headers the host's path must process"},
	{"IPV6_2292HOPOPTS", solIPv6, 3, RuleNonEmpty, "extension headers the host's path must process"},
	{"IPV6_DSTOPTS", solIPv6, 59, RuleNonEmpty, "extension headers the host's path must process"},
	{"IPV6_2292DSTOPTS", solIPv6, 4, RuleNonEmpty, "extension headers the host's path must process"},
	{"IPV6_RTHDRDSTOPTS", solIPv6, 55, RuleNonEmpty, "extension headers the host's path must process"},
	{"IPV6_2292PKTOPTIONS", solIPv6, 6, RuleNonEmpty, "may carry any of the above"},
	{"IPV6_TCLASS", solIPv6, 67, RuleTClass, "QoS classes the host and underlay may prioritize"},
	{"TCP_REPAIR", solTCP, 19, RuleAlways, "rewrite sequence numbers and queues, connect without a handshake (CAP_NET_ADMIN)"},
	{"TCP_REPAIR_QUEUE", solTCP, 20, RuleAlways, "TCP repair"},
	{"TCP_QUEUE_SEQ", solTCP, 21, RuleAlways, "TCP repair"},
	{"TCP_REPAIR_OPTIONS", solTCP, 22, RuleAlways, "TCP repair"},
	{"TCP_REPAIR_WINDOW", solTCP, 29, RuleAlways, "TCP repair"},
}

// maxUnprivPriority is the highest SO_PRIORITY an unprivileged socket may
// set (TC_PRIO_INTERACTIVE).
const maxUnprivPriority = 6

// Refuses reports whether the guard refuses a container setting option
// (level, opt) to val on a host socket: the decision slim.c's setsockopt
// program makes, from the same list. A value the program could not judge
// (an int option shorter than an int) passes, as it does there.
func Refuses(level, opt int, val []byte) bool {
	for _, g := range GuardedOptions {
		if g.Level == level && g.Opt == opt {
			// Beyond a page the program cannot see the whole value, and
			// the kernel reads it again after the check: refused.
			return g.Rule.refuses(val) || (g.Rule != RuleAlways && len(val) > sockoptPage)
		}
	}
	return false
}

// sockoptPage is how much of an optval the setsockopt program sees
// (SOCKOPT_PAGE in slim.c).
const sockoptPage = 4096

func (r Rule) refuses(val []byte) bool {
	intval := func() (int32, bool) {
		if len(val) < 4 {
			return 0, false
		}
		return int32(binary.NativeEndian.Uint32(val)), true
	}
	switch r {
	case RuleAlways:
		return true
	case RuleNonEmpty:
		return len(val) > 0
	case RulePriority:
		v, ok := intval()
		return ok && (v < 0 || v > maxUnprivPriority)
	case RuleTOS:
		if v, ok := intval(); ok {
			return tosTooHigh(v)
		}
		return len(val) >= 1 && tosTooHigh(int32(val[0]))
	case RuleTClass:
		v, ok := intval()
		return ok && v != -1 && tosTooHigh(v)
	}
	return false
}

// tosTooHigh: IP precedence 5-7.
func tosTooHigh(tos int32) bool { return tos >= 0 && (tos>>5)&7 >= 5 }
