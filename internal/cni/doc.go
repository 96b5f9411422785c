// Package cni is slim-cni, Slim's CNI plugin (spec 1.1.0; 1.0.0 is also
// accepted). It attaches a container to the Slim network the routed way
// (Calico style, no bridge): a veth pair whose container end holds the
// endpoint's /32 (and /128) with a default route via a link-local gateway
// that a permanent neighbour entry resolves to the host end, and whose host
// end carries a /32 (/128) route and a permanent neighbour entry for each
// container address, so neither side ever resolves the other.
//
// Addresses come from slimd over its local API (package api); this package
// owns only the kernel objects of one attachment: the veth pair, the
// container's addresses, routes and neighbour entries, and the host routes.
// Host-wide state (forwarding, the overlay, nftables) is slimd's.
//
// Host veths are named "slim" + the first 11 hex digits of
// sha256(containerID + "/" + ifName), so DEL finds them after the container's
// network namespace is gone and GC can tell ours from everyone else's. One
// Slim network per host is assumed: GC treats every veth of that scheme as
// belonging to the network it is asked about.
//
// Only the CNI result goes to stdout; diagnostics go to stderr.
package cni
