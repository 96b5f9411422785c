// Package overlay programs Slim's VXLAN overlay the way flannel's vxlan
// backend does: one vxlan device per host, and per remote host one
// neighbour entry, one FDB entry and one route. It carries everything the
// connection fast path does not (UDP, ICMP, containers without Slim,
// declined connections).
//
// The package owns the vxlan device (named slim-vxlan by default), every
// neighbour and FDB entry on it, and the routes marked with RouteProtocol.
// It touches nothing else. What the peers are is left to the store (slimd
// feeds the reconciler through ReconcilerConfig.Desired); addressing of
// containers is left to ipam and slim-cni.
//
// # Design notes
//
// Learning off, everything static. Every host knows every other host's pod
// subnet, VTEP address and VTEP MAC from the store, so the device needs no
// multicast group, no flooding and no source learning: the kernel would
// otherwise learn (MAC -> underlay IP) from any packet that reaches port
// 4789, which lets anybody on the underlay poison the forwarding table, and
// it floods unknown destinations. With learning off the device only sends
// where an FDB entry says, and an unknown MAC is dropped.
//
// Per remote host, in this order:
//
//  1. neighbour: remote gateway (Subnet4.Addr(), the .0) -> remote VTEP MAC,
//     NUD_PERMANENT, on the vxlan device (and the IPv6 gateway likewise);
//  2. FDB: remote VTEP MAC -> underlay IP (AF_BRIDGE, NTF_SELF, permanent);
//  3. route: Subnet4 via the gateway, dev vxlan, onlink (and Subnet6).
//
// The route goes last so the kernel never routes to a gateway it cannot
// resolve: with the neighbour and FDB entry missing, the first packets would
// queue on an ARP request that nobody answers (learning is off) and then be
// dropped with the neighbour in FAILED state. Removal runs in reverse, route
// first, for the same reason. If EnsurePeer fails half way it removes the
// objects that it created itself, in reverse order; objects it only replaced
// were ours already and stay (a retry completes them).
//
// The gateway is the remote subnet's network address, held as a /32 (and
// /128, nodad) on the remote vxlan device. It is never handed to a container,
// and as a /32 it adds no connected route that would shadow the remote
// subnets' routes.
//
// Transmit checksum offload is off on the device. With it on, VXLAN
// packets that netfilter NATs (kube-proxy's masquerade, our own DNAT towards
// host listeners) can leave with a wrong checksum, which the receiver drops:
// the "63 second delay" of flannel issue #1279 (a TCP SYN retransmitted until
// one gets through), fixed in flannel by turning tx checksum offload off on
// flannel.1 (flannel PR #1282). We do the same with the ETHTOOL_STXCSUM
// ioctl. The cost is a checksum in software per packet on the overlay path,
// which is not the fast path.
//
// MTU is the underlay MTU minus 50 (outer Ethernet 14, IPv4 20, UDP 8,
// VXLAN 8). The device's MAC is derived from the underlay IP (locally
// administered), so that a device recreated after a crash keeps the MAC that
// other hosts have already programmed.
//
// # Reconcile, don't replay
//
// Reconciler never applies store events one by one: an event only marks the
// state dirty (Trigger). A pass reads the desired peers and the kernel's
// peers (Dataplane.Peers, reconstructed from our routes, neighbours and FDB
// entries, including leftovers of half-removed peers), computes Diff and
// applies it, removals first. Passes also run on a timer and, after a
// failure, with bounded backoff. While the store is not synced nothing is
// changed, so a restart never tears down working peers.
//
// EnsureDevice keeps an existing device whose VNI, port, local address and
// underlay link match, so restarting slimd never cuts traffic. Nothing is
// removed on shutdown: the device, its entries and its routes stay in the
// kernel, and the next slimd adopts them.
package overlay
