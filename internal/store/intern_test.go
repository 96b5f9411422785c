package store

import (
	"maps"
	"net/netip"
	"reflect"
	"testing"

	"github.com/slimnet/slim/internal/api"
)

// Decoded endpoints with equal labels share one map, equal to what was
// stored; different labels do not.
func TestCompactSharesLabels(t *testing.T) {
	ep := func(id string, labels map[string]string) api.Endpoint {
		b, err := encodeEndpoint(api.Endpoint{ContainerID: id, IfName: "eth0", Host: "h1",
			IPv4: netip.MustParseAddr("10.244.0.2"), Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeEndpoint(b)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	a := ep("a", map[string]string{"app": "web", "tier": "front"})
	b := ep("b", map[string]string{"tier": "front", "app": "web"})
	c := ep("c", map[string]string{"app": "db"})
	if reflect.ValueOf(a.Labels).UnsafePointer() != reflect.ValueOf(b.Labels).UnsafePointer() {
		t.Error("equal label sets are not shared")
	}
	if reflect.ValueOf(a.Labels).UnsafePointer() == reflect.ValueOf(c.Labels).UnsafePointer() {
		t.Error("different label sets share a map")
	}
	if !maps.Equal(a.Labels, map[string]string{"app": "web", "tier": "front"}) || !maps.Equal(c.Labels, map[string]string{"app": "db"}) {
		t.Errorf("labels changed: %v %v", a.Labels, c.Labels)
	}
	if e := ep("d", nil); e.Labels != nil {
		t.Errorf("no labels became %v", e.Labels)
	}
}
