package daemon

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/slimnet/slim/internal/api"
)

// metrics are slimd's Prometheus collectors, on a registry of their own.
type metrics struct {
	reg           *prometheus.Registry
	apiRequests   *prometheus.CounterVec
	overlayApply  *prometheus.CounterVec
	resyncs       *prometheus.CounterVec
	refused       *prometheus.CounterVec
	allocations   prometheus.Counter
	releases      prometheus.Counter
	denied        *prometheus.CounterVec
	revoked       *prometheus.CounterVec
	serviceConns  *prometheus.CounterVec
	serviceResets *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slim_api_requests_total", Help: "Local API requests by route and HTTP code.",
		}, []string{"route", "code"}),
		overlayApply: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slim_overlay_peer_ops_total", Help: "Overlay peer operations by result (ensured, removed, failed).",
		}, []string{"op"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slim_store_resyncs_total", Help: "Store cache re-lists after a watch failure.",
		}, []string{"cache"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slim_store_records_refused_total", Help: "Store records refused before use (host, listener, endpoint), once per distinct reason.",
		}, []string{"kind"}),
		allocations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "slim_endpoint_allocations_total", Help: "Endpoints allocated on this host.",
		}),
		releases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "slim_endpoint_releases_total", Help: "Endpoints released on this host (DEL and GC).",
		}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slim_policy_denied_total",
			Help: "Connections network policy denied at connect(), by direction (egress of the client, ingress of the server) and the first policy isolating that side.",
		}, []string{"direction", "policy"}),
		revoked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slim_policy_revoked_total",
			Help: "Live connections cut because a policy change denies them, by path: fastpath (host sockets), overlay (container sockets), conntrack (entries).",
		}, []string{"path"}),
		serviceConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slim_service_connections_total",
			Help: "Fast-path connects to a service's cluster IP that this host sent to a backend, by service (namespace/name).",
		}, []string{"service"}),
		serviceResets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slim_service_connections_reset_total",
			Help: "Live fast-path connections cut because their backend left a service that asks for it (slim.io/backend-removal: reset), by service.",
		}, []string{"service"}),
	}
	m.reg.MustRegister(m.apiRequests, m.overlayApply, m.resyncs, m.refused,
		m.allocations, m.releases, m.denied, m.revoked, m.serviceConns, m.serviceResets, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// policyDenied counts one denied connection.
func (m *metrics) policyDenied(direction, policy string) {
	m.denied.WithLabelValues(direction, policy).Inc()
}

// counts are the state the gauges report, read at scrape time.
type counts struct {
	peers, hosts, endpoints, policies func() int
}

// watch registers the gauges that report state (programmed peers, hosts and
// endpoints in the store): computed when scraped, from the caches, so they
// are right whoever calls the API and whenever.
func (m *metrics) watch(c counts) {
	gauge := func(name, help string, f func() int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	m.reg.MustRegister(
		gauge("slim_overlay_peers", "Remote hosts programmed in the overlay.", c.peers),
		gauge("slim_store_hosts", "Hosts in the store, this one included.", c.hosts),
		gauge("slim_store_endpoints", "Endpoints in the store, all hosts.", c.endpoints),
		gauge("slim_policies", "Network policies in the store.", c.policies),
	)
}

// serviceBackends reports each service port's backends at scrape time:
// slim_service_backends{service, port, state} with state "selected" (the
// endpoints its selector matches) and "listening" (those with a
// published listener on the target port: the fast path's choices).
type serviceBackends struct {
	info func() []api.ServiceInfo
	desc *prometheus.Desc
}

func newServiceBackends(info func() []api.ServiceInfo) *serviceBackends {
	return &serviceBackends{info: info, desc: prometheus.NewDesc("slim_service_backends",
		"Backends of each service port: selected by its selector, and listening on the fast path.",
		[]string{"service", "port", "state"}, nil)}
}

func (c *serviceBackends) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *serviceBackends) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.info() {
		for _, p := range s.Ports {
			svc, port := s.Namespace+"/"+s.Name, fmt.Sprintf("%d/%s", p.Port, p.Protocol)
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(p.Backends), svc, port, "selected")
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(p.Listening), svc, port, "listening")
		}
	}
}
