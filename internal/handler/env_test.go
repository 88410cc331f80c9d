package handler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphclient"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/handler"
	"github.com/sitefollow/sitefollow/internal/ledger"
	"github.com/sitefollow/sitefollow/internal/natsembed"
	"github.com/sitefollow/sitefollow/internal/provision"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

const (
	stream      = "SITEFOLLOW"
	dlqStream   = "SITEFOLLOW_DLQ"
	dlqPrefix   = "sitefollow.dlq"
	stateBucket = "SITEFOLLOW_STATE"
	leaseTTL    = 30 * time.Second
)

// site returns a well-formed site id numbered n, known to the simulator when
// n < knownSites.
func site(n int) string {
	return fmt.Sprintf("contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-%012d,712a596e-90a1-49e3-9b48-bfa80bee8740", n)
}

const knownSites = 100

// unknownSite is well-formed but unknown to the simulator (207 invalidRequest).
var unknownSite = site(999)

// env is one test's world: an embedded JetStream server, the Graph
// simulator, and a running handler wired exactly as in production.
type env struct {
	t      *testing.T
	ns     *server.Server
	dir    string
	port   int
	nc     *nats.Conn
	js     jetstream.JetStream
	sim    *graphsim.Server
	poison []string // the simulator's Options.PoisonSites
	// siteURLs is the simulator's Options.SiteURLs.
	siteURLs map[string]string
	cfg      handler.Config
	spec     provision.Spec
	prefix   string
	current  *replica
	logSink  io.Writer
	graph    handler.Graph
	// metrics, when set, are the handlers' metrics.
	metrics *handler.Metrics
	// replicas counts handlers started, to name each one's leases.
	replicas int
	// api is the Graph API the handlers' clients speak; "" for v1.
	api graphclient.API
	// wrap, when set, wraps the real client of the replica start runs.
	wrap func(handler.Graph) handler.Graph
	// jsonBatchLinger, when set, turns the clients' JSON batching on with
	// that linger.
	jsonBatchLinger time.Duration
	// pacing is the clients' Pacing.
	pacing graphclient.Pacing
}

type option func(*env)

func withConfig(f func(*handler.Config)) option { return func(e *env) { f(&e.cfg) } }
func withDLQPrefix(p string) option             { return func(e *env) { e.prefix = p } }
func withMetrics(m *handler.Metrics) option     { return func(e *env) { e.metrics = m } }
func withAPI(api graphclient.API) option        { return func(e *env) { e.api = api } }

// withGraphWrap makes the replica start runs send its Graph calls through
// wrap, which gets the real client.
func withGraphWrap(wrap func(handler.Graph) handler.Graph) option {
	return func(e *env) { e.wrap = wrap }
}

// withJSONBatch makes the handlers' clients combine calls into $batch
// envelopes, waiting linger for calls to join. The clients know an ample
// budget: the slow start would space the first calls too far apart for any
// to wait for another.
func withJSONBatch(linger time.Duration) option {
	return func(e *env) {
		e.jsonBatchLinger = linger
		e.pacing = graphclient.Pacing{Budget: 1e7, Window: time.Minute}
	}
}

func newEnv(t *testing.T, opts ...option) *env {
	t.Helper()
	e := &env{
		t:   t,
		dir: t.TempDir(),
		cfg: handler.Config{
			BatchMaxSites:   20,
			BatchLinger:     200 * time.Millisecond,
			EventMaxSites:   100,
			MaxConcurrency:  4,
			MaxDeliver:      5,
			MaxAckPending:   1000,
			AckWait:         30 * time.Second,
			NakBaseDelay:    100 * time.Millisecond,
			NakMaxDelay:     time.Second,
			ShutdownTimeout: 10 * time.Second,
		},
		prefix:  dlqPrefix,
		logSink: io.Discard,
	}
	for _, o := range opts {
		o(e)
	}
	e.spec = provision.Spec{
		Stream: stream, Subjects: []string{"sitefollow.requests.>"}, Consumer: "sitefollow",
		AckWait: e.cfg.AckWait, MaxDeliver: e.cfg.MaxDeliver, MaxAckPending: e.cfg.MaxAckPending,
		DLQStream: dlqStream, DLQSubjects: []string{dlqPrefix + ".>"}, DLQDuplicates: time.Hour,
		StateBucket: stateBucket, LeaseTTL: leaseTTL,
	}
	e.startNATS()
	var sites []string
	for i := range knownSites {
		sites = append(sites, site(i))
	}
	sim, err := graphsim.New(graphsim.Options{Sites: sites, PoisonSites: e.poison, SiteURLs: e.siteURLs})
	if err != nil {
		t.Fatalf("graphsim: %v", err)
	}
	t.Cleanup(sim.Close)
	e.sim = sim
	if _, err := provision.Apply(context.Background(), e.js, e.spec); err != nil {
		t.Fatalf("provision: %v", err)
	}
	e.start()
	return e
}

// withPoisonSites makes the simulator refuse any call naming one of ids
// whole, with 400.
func withPoisonSites(ids ...string) option { return func(e *env) { e.poison = ids } }

// withSiteURLs makes the simulator resolve urls (URL → site id).
func withSiteURLs(urls map[string]string) option { return func(e *env) { e.siteURLs = urls } }

func (e *env) startNATS() {
	e.t.Helper()
	port := e.port
	if port == 0 {
		port = testkit.FreePort(e.t)
	}
	ns, err := natsembed.Start(natsembed.Options{StoreDir: e.dir, Port: port})
	if err != nil {
		e.t.Fatalf("nats: %v", err)
	}
	e.ns, e.port = ns, port
	if e.nc == nil {
		// Registered once, before any handler's cleanup, so handlers stop
		// while the current server still runs.
		e.t.Cleanup(func() { e.ns.Shutdown() })
		nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			e.t.Fatalf("connect: %v", err)
		}
		e.t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			e.t.Fatalf("jetstream: %v", err)
		}
		e.nc, e.js = nc, js
	}
}

// restartNATS stops the server and starts a new one on the same port and
// store, as after a crash or an upgrade.
func (e *env) restartNATS() {
	e.t.Helper()
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	e.startNATS()
}

// start runs a handler with its own NATS connection, like a replica.
func (e *env) start() {
	e.t.Helper()
	e.startReplica(e.cfg, e.wrap)
}

// startReplica runs another handler with cfg, sending its Graph calls
// through wrap when it is not nil (wrap gets the real client).
func (e *env) startReplica(cfg handler.Config, wrap func(handler.Graph) handler.Graph) {
	e.t.Helper()
	nc, err := nats.Connect(e.ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		e.t.Fatalf("connect: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatalf("jetstream: %v", err)
	}
	cred, err := graphclient.NewCredential(graphclient.CredentialConfig{
		TenantID: e.sim.TenantID(), ClientID: e.sim.ClientID(), ClientSecret: e.sim.ClientSecret(),
		AuthorityHost: e.sim.AuthorityURL(), HTTPClient: e.sim.HTTPClient(),
	})
	if err != nil {
		e.t.Fatalf("credential: %v", err)
	}
	log := zerolog.New(e.logSink)
	gc, err := graphclient.New(graphclient.Config{
		BaseURL: e.sim.GraphURL(), UserAgent: "NONISV|Test|sitefollow/test", Credential: cred,
		MaxAttempts: 4, InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond,
		MaxRetryAfter: 5 * time.Second, RequestTimeout: 20 * time.Second, Logger: log, API: e.api,
		JSONBatch: e.jsonBatchLinger > 0, JSONBatchLinger: e.jsonBatchLinger, Pacing: e.pacing,
	})
	if err != nil {
		e.t.Fatalf("graph client: %v", err)
	}
	var g handler.Graph = gc
	if e.graph != nil {
		g = e.graph
	}
	if wrap != nil {
		g = wrap(g)
	}
	e.replicas++
	led, err := ledger.Open(context.Background(), js, ledger.Config{
		Bucket: stateBucket, Stream: stream, Owner: "replica-" + itoa(e.replicas), LeaseTTL: leaseTTL,
	})
	if err != nil {
		e.t.Fatalf("ledger: %v", err)
	}
	cfg.Conn = nc
	pub := dlq.NewPublisher(js, e.prefix)
	// As in production with provisioning on: a deleted dead-letter stream
	// is re-created.
	pub.SetRecreate(func(ctx context.Context) error { return provision.EnsureDeadLetterStream(ctx, js, e.spec) })
	h := handler.New(cfg, g, pub, led, log, e.metrics)
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{t: e.t, h: h, cancel: cancel, done: make(chan error, 1)}
	e.current = r
	go func() {
		err := h.Run(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
			return provision.Apply(ctx, js, e.spec)
		})
		if derr := nc.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) {
			err = errors.Join(err, derr)
		}
		r.done <- err
	}()
	e.t.Cleanup(r.stop)
}

// replica is one running handler.
type replica struct {
	t      *testing.T
	h      *handler.Handler
	cancel context.CancelFunc
	done   chan error
}

// stop cancels the handler (as SIGTERM does) and waits for it.
func (r *replica) stop() {
	r.t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("handler run: %v", err)
		}
	case <-time.After(60 * time.Second):
		r.t.Errorf("handler did not stop")
	}
}

// stop stops the handler started last.
func (e *env) stop() {
	e.t.Helper()
	if e.current != nil {
		e.current.stop()
	}
}

func (e *env) publish(subject string, body string) {
	e.t.Helper()
	if _, err := e.js.Publish(context.Background(), subject, []byte(body)); err != nil {
		e.t.Fatalf("publish: %v", err)
	}
}

func request(user string, action event.Action, sites ...string) string {
	b, err := json.Marshal(event.Request{UserID: user, Action: action, SiteIDs: sites})
	if err != nil {
		panic(err)
	}
	return string(b)
}

func (e *env) send(user string, action event.Action, sites ...string) {
	e.t.Helper()
	e.publish("sitefollow.requests.app", request(user, action, sites...))
}

// eventually polls cond with a generous deadline.
// eventually polls cond until it holds, failing the test after a deadline
// generous enough for a shared 2-core machine under -race.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	testkit.Eventually(e.t, 2*time.Minute, what, cond)
}

func (e *env) streamMsgs(name string) uint64 {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), name)
	if err != nil {
		return ^uint64(0)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		return ^uint64(0)
	}
	return info.State.Msgs
}

// settled waits until every request was acknowledged (WorkQueue retention
// deletes acknowledged requests).
func (e *env) settled() {
	e.t.Helper()
	e.eventually("every request to be acknowledged", func() bool { return e.streamMsgs(stream) == 0 })
}

// deadLetters returns every stored dead letter with its subject.
func (e *env) deadLetters() []dlq.Stored {
	e.t.Helper()
	letters, err := dlq.List(context.Background(), e.js, dlqStream)
	if err != nil {
		e.t.Fatalf("dead letters: %v", err)
	}
	return letters
}

func (e *env) followed(user string) []string {
	got := e.sim.Followed(user)
	slices.Sort(got)
	return got
}

func sorted(ids ...string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = event.SiteKey(id)
	}
	slices.Sort(out)
	return out
}

func sitesUpTo(n int) []string {
	out := make([]string, n)
	for i := range n {
		out[i] = site(i)
	}
	return out
}

func itoa(n int) string { return strconv.Itoa(n) }
