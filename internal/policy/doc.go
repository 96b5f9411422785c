// Package policy implements Kubernetes NetworkPolicy (networking.k8s.io/v1)
// for Slim: it parses and validates policy manifests, compiles them with the
// namespaces' labels into an immutable Set, and decides whether one
// connection is allowed, saying which policies and rules decided it.
//
// It is pure logic. Where policies and labels are stored (store), how
// endpoints are found by address (daemon) and where verdicts are enforced
// (broker) are left to others.
//
// The semantics are the Kubernetes ones, on the upstream API types:
//
//   - A policy selects the endpoints of its own namespace that match
//     spec.podSelector. An endpoint is isolated for a direction when a
//     policy that selects it has that direction in its policy types; an
//     isolated direction allows only what some rule of some such policy
//     allows (policies are a union of allows), a non-isolated one allows
//     everything.
//   - A connection is allowed when the egress of its source and the ingress
//     of its destination both allow it. Addresses outside the cluster
//     (no Endpoint) have no policies of their own and are matched by
//     ipBlock peers only.
//   - Named ports are resolved on the destination endpoint, for ingress and
//     egress rules alike, as the upstream e2e tests expect.
//
// Departures and choices where the spec is silent:
//
//   - Loopback (an endpoint connecting to itself) gets no special case.
//     Upstream leaves it undefined (kubernetes#95879) and CNIs differ;
//     callers that want it always allowed should check before Decide.
//   - CIDRs parse with net/netip: no leading zeros in IPv4 octets (which
//     libc would read as octal) and no IPv4-mapped IPv6 prefixes, as the
//     API server's strict CIDR validation. Host bits may be set; they are
//     ignored. Peer addresses are unmapped before matching, so an
//     IPv4-mapped peer matches IPv4 blocks.
//   - Manifests are decoded as the API server's strict field validation
//     does: case-sensitive field names, unknown and duplicate fields are
//     errors naming the full field path.
package policy
