package broker

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the broker's Prometheus collectors.
type Metrics struct {
	Swaps     *prometheus.CounterVec   // op: connect, listen
	Fallbacks *prometheus.CounterVec   // op, reason: calls left to the kernel
	Errors    *prometheus.CounterVec   // op, step: swaps that failed
	Setup     *prometheus.HistogramVec // op: handler time of a swap
	Steps     *prometheus.HistogramVec // step: handler time by step
	Sessions  prometheus.Gauge         // supervised notification fds
	// OptionReads counts fetched application sockets by how their
	// options were read: "recorded" (only those the recorders saw
	// set) or "all".
	OptionReads *prometheus.CounterVec

	// stepObs caches Steps' observers by step name: WithLabelValues
	// hashes the label on every call, seven times per connect.
	stepObs sync.Map
	// fallbacks caches Fallbacks' counters by op and reason.
	fallbacks sync.Map

	// Resolved once: the connect path's own series.
	swapsConnect  prometheus.Counter
	setupConnect  prometheus.Observer
	readsAll      prometheus.Counter
	readsRecorded prometheus.Counter
}

// fallback returns the Fallbacks counter of one op and reason.
func (m *Metrics) fallback(op string, r Reason) prometheus.Counter {
	k := op + "/" + string(r)
	if c, ok := m.fallbacks.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := m.Fallbacks.WithLabelValues(op, string(r))
	m.fallbacks.Store(k, c)
	return c
}

// step returns the Steps observer of one step.
func (m *Metrics) step(name string) prometheus.Observer {
	if o, ok := m.stepObs.Load(name); ok {
		return o.(prometheus.Observer)
	}
	o := m.Steps.WithLabelValues(name)
	m.stepObs.Store(name, o)
	return o
}

// NewMetrics builds the collectors (not registered).
func NewMetrics() *Metrics {
	// Handler times are microseconds to tens of microseconds: buckets
	// from 2 us, 25% apart up to 100 us (where the goals for p50 and p99
	// lie), then doubling up to about 13 ms.
	buckets := append(prometheus.ExponentialBucketsRange(2e-6, 100e-6, 19), prometheus.ExponentialBuckets(200e-6, 2, 7)...)
	m := &Metrics{
		Swaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slim_broker_swaps_total", Help: "Sockets swapped onto the fast path, by syscall.",
		}, []string{"op"}),
		Fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slim_broker_fallbacks_total", Help: "Trapped calls left to the kernel (overlay), by syscall and reason.",
		}, []string{"op", "reason"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slim_broker_errors_total", Help: "Swaps that failed, by syscall and step.",
		}, []string{"op", "step"}),
		Setup: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "slim_broker_handler_seconds", Help: "Broker handler time of a swapped call, from receipt to the answer (connect: until the answer is sent).", Buckets: buckets,
		}, []string{"op"}),
		Steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "slim_broker_step_seconds", Help: "Broker handler time by step.", Buckets: buckets,
		}, []string{"step"}),
		Sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "slim_broker_sessions", Help: "Notification fds (supervised process trees) held.",
		}),
		OptionReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slim_broker_option_reads_total", Help: "Application sockets fetched, by how their options were read: recorded or all.",
		}, []string{"how"}),
	}
	m.swapsConnect = m.Swaps.WithLabelValues("connect")
	m.setupConnect = m.Setup.WithLabelValues("connect")
	m.readsAll = m.OptionReads.WithLabelValues("all")
	m.readsRecorded = m.OptionReads.WithLabelValues("recorded")
	return m
}

// Collectors lists the collectors for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Swaps, m.Fallbacks, m.Errors, m.Setup, m.Steps, m.Sessions, m.OptionReads}
}
