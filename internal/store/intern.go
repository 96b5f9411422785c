package store

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"unique"

	"github.com/slimnet/slim/internal/api"
)

// Every slimd caches every endpoint of the cluster (200,000 at 2,000
// hosts of 100 pods), so what one costs in memory is multiplied by the
// cluster. Most of an endpoint's strings repeat (its host's name, the
// interface name) and its labels repeat across replicas: decoded
// endpoints share one copy of each (docs/scale.md).

// maxLabelSets bounds the shared label sets. Sets are never freed (a
// cache cannot tell when the last endpoint using one went), so past the
// bound new sets are simply not shared: memory stays bounded whatever
// labels come and go.
const maxLabelSets = 1 << 16

var labelSets = struct {
	sync.Mutex
	m map[string]map[string]string
}{m: map[string]map[string]string{}}

// compact makes ep share its repeated strings and its label set with
// other decoded endpoints. Shared label maps are never written: every
// change of labels builds a new map (LabelEndpoint, the CNI ADD).
func compact(ep api.Endpoint) api.Endpoint {
	ep.Host = unique.Make(ep.Host).Value()
	ep.IfName = unique.Make(ep.IfName).Value()
	if len(ep.Labels) == 0 {
		return ep
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(ep.Labels)) {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(ep.Labels[k])
		b.WriteByte(0)
	}
	key := b.String()
	labelSets.Lock()
	defer labelSets.Unlock()
	if shared, ok := labelSets.m[key]; ok {
		ep.Labels = shared
		return ep
	}
	if len(labelSets.m) < maxLabelSets {
		m := make(map[string]string, len(ep.Labels))
		for k, v := range ep.Labels {
			m[unique.Make(k).Value()] = unique.Make(v).Value()
		}
		labelSets.m[key] = m
		ep.Labels = m
	}
	return ep
}

// maxSharedSlices bounds each table of shared slices, as maxLabelSets.
const maxSharedSlices = 1 << 16

// sharedSlices holds read-only slices that endpoints share: port block
// lists repeat (a 64-port block size allows only 1,024 one-block lists),
// and so do the named ports of replicas.
type sharedSlices[E any] struct {
	sync.Mutex
	m map[string]*[]E
}

var (
	blockLists = sharedSlices[api.PortBlock]{m: map[string]*[]api.PortBlock{}}
	portLists  = sharedSlices[api.NamedPort]{m: map[string]*[]api.NamedPort{}}
)

// share returns the shared copy of xs, whose content key names. Past the
// bound it returns a copy of its own.
func (s *sharedSlices[E]) share(xs []E, key string) *[]E {
	s.Lock()
	defer s.Unlock()
	if p, ok := s.m[key]; ok {
		return p
	}
	c := slices.Clone(xs)
	if len(s.m) < maxSharedSlices {
		s.m[key] = &c
	}
	return &c
}

func shareBlocks(bs []api.PortBlock) *[]api.PortBlock {
	key := make([]byte, 0, 5*len(bs))
	for _, b := range bs {
		v6 := byte(0)
		if b.IPv6 {
			v6 = 1
		}
		key = append(key, byte(b.Start>>8), byte(b.Start), byte(b.Size>>8), byte(b.Size), v6)
	}
	return blockLists.share(bs, string(key))
}

func sharePorts(ps []api.NamedPort) *[]api.NamedPort {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%s\x00%d\x00%s\x00", p.Name, p.Port, p.Protocol)
	}
	return portLists.share(ps, b.String())
}
