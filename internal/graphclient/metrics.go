package graphclient

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus collectors of a Client. A nil *Metrics is
// valid and records nothing.
type Metrics struct {
	calls        *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	sitesPerCall *prometheus.HistogramVec
	retries      *prometheus.CounterVec
	inflight     prometheus.Gauge
	throttleWait prometheus.Counter
	paceLimit    prometheus.Gauge
	concurrent   prometheus.Gauge
	tokenFails   prometheus.Counter
	resolutions  *prometheus.CounterVec
	httpReqs     *prometheus.CounterVec
	batchSize    prometheus.Histogram
}

// The kind label values of sitefollow_graph_http_requests_total.
const (
	httpKindDirect = "direct"
	httpKindBatch  = "batch"
)

// NewMetrics creates the collectors and registers them with reg (when reg
// is not nil). It panics, like prometheus.MustRegister, if they are already
// registered there.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sitefollow_graph_calls_total",
			Help: "Graph HTTP calls (followedSites, direct or inside a $batch, each counted; and getSite resolving site URLs), by operation and HTTP status (\"error\" when no status arrived, \"canceled\" when the caller gave up).",
		}, []string{"operation", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sitefollow_graph_call_duration_seconds",
			Help:    "Duration of Graph followedSites HTTP calls.",
			Buckets: prometheus.DefBuckets,
		}, []string{"operation"}),
		sitesPerCall: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sitefollow_graph_sites_per_call",
			Help:    "Number of site ids sent in one Graph followedSites call.",
			Buckets: []float64{1, 2, 5, 10, 15, 20, 30, 50, 100},
		}, []string{"operation"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sitefollow_graph_retries_total",
			Help: "Graph followedSites calls repeated in process, by reason (\"split\": a call refused whole with 400, split in two to find the sites behind it).",
		}, []string{"operation", "reason"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sitefollow_graph_inflight",
			Help: "Graph followedSites HTTP calls in flight.",
		}),
		throttleWait: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sitefollow_graph_throttle_wait_seconds_total",
			Help: "Time calls spent waiting for the app-wide throttle gate (summed over calls).",
		}),
		paceLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sitefollow_graph_pace_calls_per_second",
			Help: "Graph calls per second this replica allows itself (0 while unlimited).",
		}),
		concurrent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sitefollow_graph_concurrency_limit",
			Help: "Graph calls allowed in flight at once, as adapted to throttling.",
		}),
		tokenFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sitefollow_graph_token_failures_total",
			Help: "Token requests the credential failed (Entra, the managed identity endpoint or the certificate or token file); the sites waiting for them are redelivered, never dead-lettered.",
		}),
		resolutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sitefollow_site_url_resolutions_total",
			Help: "Site URLs resolved to site ids, by result: hit (cached id, no Graph call), miss (resolved by a Graph GET), shared (answered by a GET another caller had in flight), notFound (404, from Graph or cached), error (transient or other failure).",
		}, []string{"result"}),
		httpReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sitefollow_graph_http_requests_total",
			Help: "HTTP requests sent to Graph for followedSites calls, by kind: \"direct\" (one call) or \"batch\" (a $batch envelope carrying several calls, each also counted in sitefollow_graph_calls_total).",
		}, []string{"kind"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sitefollow_graph_batch_requests",
			Help:    "Graph calls (inner requests) carried by one $batch envelope.",
			Buckets: []float64{2, 3, 5, 8, 12, 16, 20},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.duration, m.sitesPerCall, m.retries, m.inflight, m.throttleWait, m.paceLimit, m.concurrent, m.tokenFails,
			m.resolutions, m.httpReqs, m.batchSize)
	}
	return m
}

func (m *Metrics) callStarted(op Operation, sites int) {
	if m == nil {
		return
	}
	m.inflight.Inc()
	m.sitesPerCall.WithLabelValues(string(op)).Observe(float64(sites))
}

func (m *Metrics) callDone(op Operation, status string, d time.Duration) {
	if m == nil {
		return
	}
	m.inflight.Dec()
	m.calls.WithLabelValues(string(op), status).Inc()
	m.duration.WithLabelValues(string(op)).Observe(d.Seconds())
}

// httpRequest counts one HTTP request to Graph of the given kind.
func (m *Metrics) httpRequest(kind string) {
	if m == nil {
		return
	}
	m.httpReqs.WithLabelValues(kind).Inc()
}

// envelope records how many calls one $batch envelope carried.
func (m *Metrics) envelope(n int) {
	if m == nil {
		return
	}
	m.batchSize.Observe(float64(n))
}

func (m *Metrics) retry(op Operation, reason string) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(string(op), reason).Inc()
}

func (m *Metrics) throttleWaited(d time.Duration) {
	if m == nil || d <= 0 {
		return
	}
	m.throttleWait.Add(d.Seconds())
}

func (m *Metrics) pace(limit float64) {
	if m == nil {
		return
	}
	if math.IsInf(limit, 1) {
		limit = 0
	}
	m.paceLimit.Set(limit)
}

func (m *Metrics) concurrency(n int) {
	if m == nil {
		return
	}
	m.concurrent.Set(float64(n))
}

// tokenFailed counts a token the credential could not produce.
func (m *Metrics) tokenFailed() {
	if m == nil {
		return
	}
	m.tokenFails.Inc()
}

// resolved counts one site URL resolution by result.
func (m *Metrics) resolved(result string) {
	if m == nil {
		return
	}
	m.resolutions.WithLabelValues(result).Inc()
}
