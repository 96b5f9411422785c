package daemon

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/store"
)

// A refused record is counted once per distinct reason, however often it
// is read, and counted again if it changes; a fixed record passes.
func TestValidatorReportsOnce(t *testing.T) {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refused"}, []string{"kind"})
	v := newValidator(store.Limits{PortFirst: 20480, PortLast: 32767}, slog.New(slog.DiscardHandler), refused)
	h := api.Host{Name: "h1", UnderlayIP: netip.MustParseAddr("192.168.77.1"), Subnet4: netip.MustParsePrefix("10.244.0.0/24")}
	hosts := fakeRecords{h: h}
	l := api.Listener{VIP: netip.MustParseAddr("10.244.0.5"), Port: 80, Host: "h1", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 20737}
	for range 3 {
		if v.listener(l, hosts) {
			t.Fatal("listener to loopback used")
		}
	}
	if n := counterValue(t, refused.WithLabelValues("listener")); n != 1 {
		t.Errorf("counted %v times, want once", n)
	}
	l.HostIP, l.HostPort = h.UnderlayIP, 22 // another reason
	v.listener(l, hosts)
	if n := counterValue(t, refused.WithLabelValues("listener")); n != 2 {
		t.Errorf("counted %v times, want twice", n)
	}
	l.HostIP, l.HostPort = h.UnderlayIP, 20737
	if !v.listener(l, hosts) {
		t.Error("valid listener refused")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// fakeRecords has one host, whose record and listeners hang on lease 7.
type fakeRecords struct{ h api.Host }

func (f fakeRecords) host(name string) (api.Host, int64, bool) { return f.h, 7, name == f.h.Name }
func (f fakeRecords) listenerLease(string) int64               { return 7 }
