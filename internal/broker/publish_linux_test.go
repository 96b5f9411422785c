package broker

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/slimnet/slim/internal/api"
)

// recPublisher keeps what is published; Publish writes, then fails for
// the addresses in failAfterWrite (a record written but not seen).
type recPublisher struct {
	records        map[netip.AddrPort]bool
	failAfterWrite netip.AddrPort
}

func (p *recPublisher) Publish(_ context.Context, l api.Listener) error {
	v := netip.AddrPortFrom(l.VIP, l.Port)
	p.records[v] = true
	if v == p.failAfterWrite {
		return errors.New("published, not seen")
	}
	return nil
}

func (p *recPublisher) Withdraw(_ context.Context, vip netip.Addr, port uint16) error {
	delete(p.records, netip.AddrPortFrom(vip, port))
	return nil
}

// A listener whose publishing fails leaves no record behind, the one that
// failed included: the listen stays in the container.
func TestPublishFailureWithdraws(t *testing.T) {
	v4, v6 := netip.MustParseAddrPort("10.244.0.5:80"), netip.MustParseAddrPort("[fd5a:11::5]:80")
	for _, fail := range []netip.AddrPort{v4, v6} {
		p := &recPublisher{records: map[netip.AddrPort]bool{}, failAfterWrite: fail}
		s := &session{b: &Broker{cfg: Config{Publisher: p, Log: slog.New(slog.DiscardHandler)}}}
		if err := s.publish(t.Context(), &Container{ID: "c", IfName: "eth0"}, []netip.AddrPort{v4, v6}, 20000); err == nil {
			t.Fatalf("failing %v: publish succeeded", fail)
		}
		if len(p.records) != 0 {
			t.Errorf("failing %v: records left %v", fail, slices.Collect(maps.Keys(p.records)))
		}
	}
}
