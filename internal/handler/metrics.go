package handler

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphclient"
)

// Metrics are the handler's Prometheus collectors. A nil *Metrics records
// nothing, so tests need not build one.
type Metrics struct {
	events       *prometheus.CounterVec
	sites        *prometheus.CounterVec
	deadLetters  *prometheus.CounterVec
	messages     *prometheus.CounterVec
	pendingSites prometheus.Gauge
	inFlight     prometheus.Gauge
	heldMessages prometheus.Gauge
}

// NewMetrics registers the handler's collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sitefollow_events_total", Help: "Request events received, by validity.",
		}, []string{"result"}),
		sites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sitefollow_sites_total", Help: "Sites sent to Graph, by action and outcome (applied, rejected, unresolved), plus superseded requests.",
		}, []string{"action", "outcome"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sitefollow_dead_letters_total", Help: "Dead letters stored, by error code.",
		}, []string{"code"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sitefollow_messages_settled_total", Help: "Request messages settled, by ack or nak.",
		}, []string{"result"}),
		pendingSites: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sitefollow_pending_sites", Help: "Sites waiting to be batched.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sitefollow_inflight_batches", Help: "User batches being sent to Graph.",
		}),
		heldMessages: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sitefollow_held_messages", Help: "Request messages delivered and not yet settled.",
		}),
	}
	reg.MustRegister(m.events, m.sites, m.deadLetters, m.messages, m.pendingSites, m.inFlight, m.heldMessages)
	return m
}

func (m *Metrics) event(result string) {
	if m != nil {
		m.events.WithLabelValues(result).Inc()
	}
}

var outcomeNames = map[graphclient.Outcome]string{
	graphclient.Applied:    "applied",
	graphclient.Rejected:   "rejected",
	graphclient.Unresolved: "unresolved",
}

func (m *Metrics) site(action event.Action, o graphclient.Outcome, superseded int) {
	if m == nil {
		return
	}
	m.sites.WithLabelValues(string(action), outcomeNames[o]).Inc()
	if superseded > 0 {
		m.sites.WithLabelValues(string(action), "superseded").Add(float64(superseded))
	}
}

func (m *Metrics) deadLettered(code string) {
	if m != nil {
		m.deadLetters.WithLabelValues(code).Inc()
	}
}

func (m *Metrics) settled(result string) {
	if m != nil {
		m.messages.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) gauges(pendingSites, inFlight, held int) {
	if m != nil {
		m.pendingSites.Set(float64(pendingSites))
		m.inFlight.Set(float64(inFlight))
		m.heldMessages.Set(float64(held))
	}
}
