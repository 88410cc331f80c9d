package handler

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

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
	heldLimit    prometheus.Gauge
	leases       *prometheus.CounterVec
	dlqFailures  prometheus.Counter
	strandedG    prometheus.Gauge
	userWaits    prometheus.Counter

	// stranded are the requests (by stream sequence) whose latest dead
	// letter could not be stored, with when that was last seen; strandedN
	// is their count, for /readyz.
	mu        sync.Mutex
	stranded  map[uint64]time.Time
	strandedN atomic.Int64

	// siteCounters are the sites vector's children, resolved once: they are bumped for
	// every site, and a label lookup per site shows in profiles.
	siteCounters [2][4]prometheus.Counter // [follow, unfollow][superseded, applied, rejected, unresolved]
	acks, naks   prometheus.Counter
	valid, bad   prometheus.Counter
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
		heldLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sitefollow_held_messages_limit",
			Help: "Most request messages this process holds at the current Graph pace; beyond it it stops pulling and leaves work to other replicas.",
		}),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sitefollow_leases_total",
			Help: "User leases asked for: acquired, busy (another replica serves the user), error (the ledger could not be reached), lost (applied sites could not be recorded); deferred counts sites held back while a newer request for them is in doubt.",
		}, []string{"result"}),
	}
	m.dlqFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sitefollow_dead_letter_failures_total",
		Help: "Dead letters that could not be stored; their requests are NAKed and stay in the stream.",
	})
	m.strandedG = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sitefollow_stranded_requests",
		Help: "Requests whose dead letter could not be stored at their latest delivery: kept for redelivery, never acknowledged, until one is.",
	})
	m.userWaits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sitefollow_user_not_found_waits_total",
		Help: "Request deliveries NAKed to wait for a new user's account, which Graph answered as not found within SITEFOLLOW_NEW_USER_WINDOW.",
	})
	m.stranded = make(map[uint64]time.Time)
	reg.MustRegister(m.dlqFailures, m.strandedG, m.userWaits)
	reg.MustRegister(m.events, m.sites, m.deadLetters, m.messages, m.pendingSites, m.inFlight, m.heldMessages, m.heldLimit, m.leases)
	for a, action := range []event.Action{event.Follow, event.Unfollow} {
		for o, outcome := range []string{"superseded", "applied", "rejected", "unresolved"} {
			m.siteCounters[a][o] = m.sites.WithLabelValues(string(action), outcome)
		}
	}
	m.acks, m.naks = m.messages.WithLabelValues("ack"), m.messages.WithLabelValues("nak")
	m.valid, m.bad = m.events.WithLabelValues("valid"), m.events.WithLabelValues("invalid")
	return m
}

func (m *Metrics) event(valid bool) {
	switch {
	case m == nil:
	case valid:
		m.valid.Inc()
	default:
		m.bad.Inc()
	}
}

func (m *Metrics) site(action event.Action, o graphclient.Outcome, superseded int) {
	if m == nil {
		return
	}
	a := actionIndex(action)
	if o >= graphclient.Applied && o <= graphclient.Unresolved {
		m.siteCounters[a][o].Inc()
	}
	if superseded > 0 {
		m.siteCounters[a][0].Add(float64(superseded))
	}
}

// skipped counts a site never sent because a newer request for it had
// already been settled.
func (m *Metrics) skipped(action event.Action) {
	if m == nil {
		return
	}
	m.siteCounters[actionIndex(action)][0].Inc()
}

func actionIndex(action event.Action) int {
	if action == event.Unfollow {
		return 1
	}
	return 0
}

func (m *Metrics) deadLettered(code string) {
	if m != nil {
		m.deadLetters.WithLabelValues(code).Inc()
	}
}

// lease counts one lease outcome; result is one of a fixed few.
func (m *Metrics) lease(result string) {
	if m != nil {
		m.leases.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) settled(ack bool) {
	switch {
	case m == nil:
	case ack:
		m.acks.Inc()
	default:
		m.naks.Inc()
	}
}

func (m *Metrics) gauges(pendingSites, inFlight, held, heldLimit int) {
	if m != nil {
		m.pendingSites.Set(float64(pendingSites))
		m.inFlight.Set(float64(inFlight))
		m.heldMessages.Set(float64(held))
		m.heldLimit.Set(float64(heldLimit))
	}
}

// maxStranded bounds the stranded set; beyond it the count saturates.
const maxStranded = 100_000

// strand records whether the request seq, settled now, is stranded: its
// dead letter could not be stored.
func (m *Metrics) strand(seq uint64, stranded bool, now time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case stranded:
		if _, ok := m.stranded[seq]; ok || len(m.stranded) < maxStranded {
			m.stranded[seq] = now
		}
	case !stranded:
		delete(m.stranded, seq)
	}
	m.strandedN.Store(int64(len(m.stranded)))
	m.strandedG.Set(float64(len(m.stranded)))
}

// pruneStranded forgets stranded requests not seen since before: another
// replica settled them, or they were deleted.
func (m *Metrics) pruneStranded(before time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	maps.DeleteFunc(m.stranded, func(_ uint64, at time.Time) bool { return at.Before(before) })
	m.strandedN.Store(int64(len(m.stranded)))
	m.strandedG.Set(float64(len(m.stranded)))
}

// Stranded is how many requests are stranded now: delivered, their dead
// letter not storable, kept for redelivery. /readyz reports it.
func (m *Metrics) Stranded() int {
	if m == nil {
		return 0
	}
	return int(m.strandedN.Load())
}

func (m *Metrics) deadLetterFailed() {
	if m != nil {
		m.dlqFailures.Inc()
	}
}

// userWaited counts a delivery NAKed to wait for a new user's account.
func (m *Metrics) userWaited() {
	if m != nil {
		m.userWaits.Inc()
	}
}
