package store

import (
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
