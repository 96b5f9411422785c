package overlay

import "context"

// RouteProtocol marks the routes the overlay creates (rtm_protocol 0x53,
// 'S' for Slim; unassigned in iproute2's rt_protos), so that Peers reports
// only routes we made and RemovePeer never deletes anybody else's. `ip route
// show proto 83` lists them.
const RouteProtocol = 0x53

// Dataplane is all the reconciler needs from the kernel.
type Dataplane interface {
	// EnsurePeer programs p's neighbour entries, FDB entry and routes, in
	// that order, with replace operations: applying it twice is harmless, and
	// it repairs a peer whose objects were changed or deleted by hand.
	EnsurePeer(ctx context.Context, p Peer) error
	// RemovePeer removes what p names, in reverse order: routes, FDB entry,
	// neighbour entries. Objects already gone count as removed. A Peer from
	// Diff's remove list may name only some objects (no Subnet4); only those
	// are removed.
	RemovePeer(ctx context.Context, p Peer) error
	// Peers reads the peers back from the kernel, sorted by subnet, with
	// Host empty. It also reports leftovers (see Diff), so that nothing of
	// ours stays behind.
	Peers(ctx context.Context) ([]Peer, error)
}
