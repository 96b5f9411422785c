package store

import (
	"net/netip"
	"strings"
	"time"

	"github.com/slimnet/slim/internal/api"
)

// items holds a cache's decoded values. Most caches keep them as they
// are (plainItems). The endpoint cache holds every container of the
// cluster, 200,000 at 2,000 hosts, so it packs them (endpointItems): an
// api.Endpoint in a map costs about 360 bytes, a packed one about 150
// (docs/scale.md).
type items[T any] interface {
	get(key string) (T, bool)
	set(key string, v T)
	del(key string)
	len() int
	// all calls fn for every item until fn returns false.
	all(fn func(key string, v T) bool)
}

type plainItems[T any] map[string]T

func (m plainItems[T]) get(k string) (T, bool) { v, ok := m[k]; return v, ok }
func (m plainItems[T]) set(k string, v T)      { m[k] = v }
func (m plainItems[T]) del(k string)           { delete(m, k) }
func (m plainItems[T]) len() int               { return len(m) }
func (m plainItems[T]) all(fn func(string, T) bool) {
	for k, v := range m {
		if !fn(k, v) {
			return
		}
	}
}

// endpointItems keeps endpoints packed, keyed "<host>/<container>/<if>".
// A packed endpoint takes its names from its key, keeps its addresses
// without their zone handles, shares its port blocks and named ports with
// other endpoints that have the same, and keeps no netns
// path for other hosts' endpoints (only the host that made a container
// enters its namespace). Anything that does not fit is kept whole.
type endpointItems struct {
	// self is the host whose endpoints keep their netns path ("": all).
	self string
	m    map[string]packedEndpoint
	// netns holds the kept netns paths apart: a few hundred endpoints
	// have one, so a field would cost every other endpoint its header.
	netns map[string]string
}

func newEndpointItems(self string) *endpointItems {
	return &endpointItems{self: self, m: map[string]packedEndpoint{}, netns: map[string]string{}}
}

type packedEndpoint struct {
	created int64 // Unix nanoseconds, UTC; 0 with flag noCreated
	labels  map[string]string
	// ports and blocks are shared with other endpoints (intern.go).
	ports  *[]api.NamedPort
	blocks *[]api.PortBlock
	// whole is set, and everything else unset, for an endpoint that does
	// not fit.
	whole *api.Endpoint
	v6    [16]byte
	v4    [4]byte
	flags uint8
}

const (
	packedV4 uint8 = 1 << iota
	packedV6
	packedNoCreated
)

// keyNames splits an endpoint key into its host, container and
// interface.
func keyNames(k string) (host, id, ifName string, ok bool) {
	host, rest, ok1 := strings.Cut(k, "/")
	id, ifName, ok2 := strings.Cut(rest, "/")
	return host, id, ifName, ok1 && ok2
}

// packEndpoint packs ep, stored under k, without its netns path.
func packEndpoint(k string, ep api.Endpoint) packedEndpoint {
	var p packedEndpoint
	host, id, ifName, ok := keyNames(k)
	fits := ok && ep.Host == host && ep.ContainerID == id && ep.IfName == ifName &&
		(!ep.IPv4.IsValid() || ep.IPv4.Is4()) &&
		(!ep.IPv6.IsValid() || (ep.IPv6.Is6() && !ep.IPv6.Is4In6() && ep.IPv6.Zone() == "")) &&
		(ep.Created.IsZero() || (ep.Created.Location() == time.UTC && ep.Created.Year() >= 1970 && ep.Created.Year() < 2200))
	if !fits {
		ep.Netns = ""
		return packedEndpoint{whole: &ep}
	}
	p.labels = ep.Labels
	if len(ep.Ports) > 0 {
		p.ports = sharePorts(ep.Ports)
	}
	if len(ep.PortBlocks) > 0 {
		p.blocks = shareBlocks(ep.PortBlocks)
	}
	if ep.Created.IsZero() {
		p.flags |= packedNoCreated
	} else {
		p.created = ep.Created.UnixNano()
	}
	if ep.IPv4.IsValid() {
		p.flags |= packedV4
		p.v4 = ep.IPv4.As4()
	}
	if ep.IPv6.IsValid() {
		p.flags |= packedV6
		p.v6 = ep.IPv6.As16()
	}
	return p
}

func (p packedEndpoint) unpack(k, netns string) api.Endpoint {
	if p.whole != nil {
		ep := *p.whole
		ep.Netns = netns
		return ep
	}
	var ep api.Endpoint
	ep.Host, ep.ContainerID, ep.IfName, _ = keyNames(k)
	ep.Labels, ep.Netns = p.labels, netns
	if p.ports != nil {
		ep.Ports = *p.ports
	}
	if p.flags&packedNoCreated == 0 {
		ep.Created = time.Unix(0, p.created).UTC()
	}
	if p.flags&packedV4 != 0 {
		ep.IPv4 = netip.AddrFrom4(p.v4)
	}
	if p.flags&packedV6 != 0 {
		ep.IPv6 = netip.AddrFrom16(p.v6)
	}
	if p.blocks != nil {
		ep.PortBlocks = *p.blocks
	}
	return ep
}

func (e *endpointItems) keepNetns(k string) bool {
	return e.self == "" || strings.HasPrefix(k, e.self) && strings.HasPrefix(k[len(e.self):], "/")
}

func (e *endpointItems) get(k string) (api.Endpoint, bool) {
	p, ok := e.m[k]
	if !ok {
		return api.Endpoint{}, false
	}
	return p.unpack(k, e.netns[k]), true
}

func (e *endpointItems) set(k string, ep api.Endpoint) {
	e.m[k] = packEndpoint(k, ep)
	if ep.Netns != "" && e.keepNetns(k) {
		e.netns[k] = ep.Netns
	} else {
		delete(e.netns, k)
	}
}

func (e *endpointItems) del(k string) {
	delete(e.m, k)
	delete(e.netns, k)
}

func (e *endpointItems) len() int { return len(e.m) }

func (e *endpointItems) all(fn func(string, api.Endpoint) bool) {
	for k, p := range e.m {
		if !fn(k, p.unpack(k, e.netns[k])) {
			return
		}
	}
}
