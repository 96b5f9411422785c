package broker

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/slimnet/slim/internal/api"
)

// fakePorts serves fixed blocks.
type fakePorts struct{ blocks []api.PortBlock }

func (f fakePorts) Blocks(*Container) []api.PortBlock            { return f.blocks }
func (f fakePorts) Grow(context.Context, *Container, bool) error { return nil }
func (f fakePorts) ListenerPort(context.Context) (uint16, error) { return 0, nil }
func (f fakePorts) ReleaseListenerPort(uint16)                   {}

// nextPort round-robins over one family's blocks, and its cursors stay
// bounded however many containers pass.
func TestNextPort(t *testing.T) {
	b := &Broker{cfg: Config{Ports: fakePorts{[]api.PortBlock{
		{Start: 100, Size: 2}, {Start: 200, Size: 2, IPv6: true}, {Start: 300, Size: 1},
	}}}, cursors: map[string]int{}}
	c := &Container{ID: "c1"}
	var v4, v6 []uint16
	for range 4 {
		p, _ := b.nextPort(c, false)
		v4 = append(v4, p)
		p, _ = b.nextPort(c, true)
		v6 = append(v6, p)
	}
	if !slices.Equal(v4, []uint16{100, 101, 300, 100}) || !slices.Equal(v6, []uint16{200, 201, 200, 201}) {
		t.Errorf("ports v4 %v, v6 %v", v4, v6)
	}
	if _, ok := (&Broker{cfg: Config{Ports: fakePorts{}}, cursors: map[string]int{}}).nextPort(c, false); ok {
		t.Error("a port without blocks")
	}
	for i := range 3 * maxCursors {
		b.nextPort(&Container{ID: fmt.Sprint(i)}, false)
	}
	if len(b.cursors) > maxCursors {
		t.Errorf("%d cursors kept, bound %d", len(b.cursors), maxCursors)
	}
}
