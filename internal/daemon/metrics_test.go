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
	m.peers.Set(2)
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`slim_api_requests_total{code="200",route="POST /v1/endpoints"} 1`,
		"slim_overlay_peers 2",
		"slim_endpoint_allocations_total 0",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
