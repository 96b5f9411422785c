package daemon

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestMetricsExposition(t *testing.T) {
	m := newMetrics()
	m.apiRequests.WithLabelValues("POST /v1/endpoints", "200").Inc()
	peers := 2
	m.watch(counts{peers: func() int { return peers }, hosts: func() int { return 3 }, endpoints: func() int { return 7 }, policies: func() int { return 2 }})
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	peers = 5 // read at the next scrape
	rec2 := httptest.NewRecorder()
	promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}).ServeHTTP(rec2, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec2.Body.String(), "slim_overlay_peers 5") {
		t.Error("peers gauge not read at scrape time")
	}
	for _, want := range []string{
		`slim_api_requests_total{code="200",route="POST /v1/endpoints"} 1`,
		"slim_overlay_peers 2",
		"slim_store_hosts 3",
		"slim_store_endpoints 7",
		"slim_policies 2",
		"slim_endpoint_allocations_total 0",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
