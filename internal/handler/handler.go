// Package handler turns JetStream request messages into batched Graph calls
// and owns the fate of every message: ack, NAK with delay, or dead-letter
// then ack.
//
// Data flow: the Consume callback decodes a message and hands it to the
// loop goroutine, never blocking on I/O; a request naming sites by URL that
// are not cached goes through the resolver stage first (resolve.go), so the
// loop only ever sees site ids. The loop owns the batch.Aggregator
// and all acknowledgements; it starts at most twice MaxConcurrency workers,
// each running one user's batch (ledger, Graph, dead letters), and gets the
// batch back on a channel. At most MaxConcurrency of them are in Graph calls
// at once: the rest do their ledger round trips meanwhile, so those never
// leave a Graph slot idle. Because one goroutine owns
// the state, there are no locks on the hot path.
//
// Replicas share the durable consumer, so one user's requests may be spread
// over several of them, and over redeliveries and restarts. A worker first
// takes the user's lease in the ledger (internal/ledger): while it holds it
// no other replica sends calls for that user. It skips every site the
// ledger says a request at least as new was applied for, and records what
// Graph applied before the messages are acknowledged. A user leased by
// another replica is handed back to the aggregator and tried again shortly.
package handler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sitefollow/sitefollow/internal/batch"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphclient"
	"github.com/sitefollow/sitefollow/internal/ledger"
)

// Graph applies one call's worth of sites for a user.
type Graph interface {
	Apply(ctx context.Context, userID string, op graphclient.Operation, siteIDs []string, opts ...graphclient.ApplyOption) []graphclient.SiteResult
}

// Ledger is the state replicas share: a lease per user, and per (user,
// site) the newest request Graph applied. *ledger.Ledger implements it.
type Ledger interface {
	Acquire(ctx context.Context, userKey string) (*ledger.Lease, error)
	Ensure(ctx context.Context, ls *ledger.Lease, need time.Duration) error
	KeepAlive(ctx context.Context, ls *ledger.Lease) (stop func())
	Intend(ctx context.Context, ls *ledger.Lease, sending map[string]uint64) error
	Commit(ctx context.Context, ls *ledger.Lease, outcomes map[string]ledger.Settlement) error
	Release(ctx context.Context, ls *ledger.Lease) error
	InStream(ctx context.Context, seq uint64) (bool, error)
	// StreamCreated re-reads when the request stream was created.
	StreamCreated(ctx context.Context) (time.Time, error)
}

// leaseMargin is how much longer than a Graph call a lease must still run
// when the call goes out, so the call is answered (or abandoned) and its
// outcome recorded before any other replica could take the user.
const leaseMargin = 5 * time.Second

// DeadLetters stores a dead letter and returns once it is durable.
type DeadLetters interface {
	Publish(ctx context.Context, d event.DeadLetter) error
}

// OpenConsumer returns the consumer to read from; Run calls it again when
// the consumer disappears (deleted, or a server lost its state).
type OpenConsumer func(ctx context.Context) (jetstream.Consumer, error)

// Config tunes a Handler. See internal/config for the meaning and defaults.
type Config struct {
	BatchMaxSites int
	BatchLinger   time.Duration
	// BatchQuiet sends pending batches early once the stream has nothing
	// undelivered and no request arrived for this long; 0 disables it.
	BatchQuiet      time.Duration
	EventMaxSites   int
	MaxConcurrency  int
	MaxDeliver      int
	MaxAckPending   int
	AckWait         time.Duration
	NakBaseDelay    time.Duration
	NakMaxDelay     time.Duration
	ShutdownTimeout time.Duration
	// NewUserWindow is how long after a request's occurredAt (else its
	// publish time) Graph may answer that its user does not exist
	// (graphclient.CodeUserNotFound) before its sites are dead-lettered as
	// userNotFound; until then the request waits (see newUser). Zero
	// dead-letters at once.
	NewUserWindow time.Duration
	// Waits counts the deliveries spent waiting for new users, so they do
	// not count against MaxDeliver; nil means the Ledger when it counts
	// them (*ledger.Ledger does). Without one, waits spend deliveries.
	Waits WaitCounter
	// PullMaxBytes is how many bytes of messages the client buffers
	// (jetstream.PullMaxBytes); it must exceed the server's max_payload, or
	// a message that large would never be delivered. Zero means 16 MiB.
	PullMaxBytes int
	// EventMaxBytes is the largest request payload decoded; larger ones are
	// dead-lettered as invalidEvent without being parsed. Zero means 64 KiB.
	EventMaxBytes int
	// HeldPayloadBytes bounds the payloads of invalid events held until
	// their dead letters are stored. Zero means 32 MiB.
	HeldPayloadBytes int
	// HeldMemory bounds the memory of the messages held, in bytes, by the
	// estimate heldCost: how many messages a backlog spread over many
	// users can have in hand to coalesce. Zero means DefaultHeldMemory.
	HeldMemory int
	// HeldHorizon is how long the work held may take at a throttled Graph
	// pace, in full calls (see intakeLimit). Zero means AckWait/2.
	HeldHorizon time.Duration
	// Conn is the connection acknowledgements are published on (to each
	// message's reply subject); required.
	Conn *nats.Conn
	// LeaseHold is how long this replica may keep a user's lease across
	// batches; past it the lease is given up after each batch so other
	// replicas holding requests for the user get their turn. A kept lease
	// idle for a linger is given up too. Zero means five lingers, between
	// 2s and 20s.
	LeaseHold time.Duration
	// Pace reports the calls per second Graph allows the app now (+Inf when
	// it does not throttle); nil means unlimited. It bounds how much this
	// process holds (see intake).
	Pace func() float64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler consumes request messages. Create it with New.
type Handler struct {
	cfg Config
	// graphSlots bounds the batches in Graph calls at once.
	graphSlots chan struct{}
	graph      Graph
	// sites resolves site URLs; nil when graph does not.
	sites   SiteResolver
	dlq     DeadLetters
	ledger  Ledger
	log     zerolog.Logger
	metrics *Metrics
	decoder event.Decoder
	// start is when the handler was made: ticks count from it.
	start time.Time
	// turns counts the loop's turns and visits the aggregator's (see
	// batch.Aggregator.Visits): work the loop does while nothing happens
	// shows here, for tests.
	turns, visits atomic.Uint64
}

// New returns a Handler. metrics may be nil.
func New(cfg Config, graph Graph, dlq DeadLetters, led Ledger, log zerolog.Logger, metrics *Metrics) *Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PullMaxBytes <= 0 {
		cfg.PullMaxBytes = 16 << 20
	}
	if cfg.EventMaxBytes <= 0 {
		cfg.EventMaxBytes = DefaultEventMaxBytes
	}
	if cfg.HeldPayloadBytes <= 0 {
		cfg.HeldPayloadBytes = 32 << 20
	}
	if cfg.HeldMemory <= 0 {
		cfg.HeldMemory = DefaultHeldMemory
	}
	if cfg.HeldHorizon <= 0 {
		cfg.HeldHorizon = cfg.AckWait / 2
	}
	if w, ok := led.(WaitCounter); ok && cfg.Waits == nil {
		cfg.Waits = w
	}
	if cfg.LeaseHold <= 0 {
		cfg.LeaseHold = min(max(5*cfg.BatchLinger, 2*time.Second), 20*time.Second)
	}
	h := &Handler{cfg: cfg, start: cfg.Now(), graph: graph, dlq: dlq, ledger: led, log: log, metrics: metrics,
		decoder: event.Decoder{MaxSites: cfg.EventMaxSites}, graphSlots: make(chan struct{}, max(cfg.MaxConcurrency, 1))}
	if r, ok := graph.(SiteResolver); ok {
		h.sites = r
	}
	return h
}

// tick is the unit of tracked.progress: coarse enough that 32 bits last
// for years, fine enough beside AckWait (at least seconds).
const tick = 100 * time.Millisecond

// ticks is t in ticks since the handler started.
func (h *Handler) ticks(t time.Time) uint32 {
	return uint32(min(max(t.Sub(h.start)/tick, 0), math.MaxUint32))
}

// workerLimit is how many batches may be in a worker at once: twice the
// Graph slots, so ledger round trips overlap other batches' Graph calls.
func (h *Handler) workerLimit() int { return 2 * max(h.cfg.MaxConcurrency, 1) }

// DefaultEventMaxBytes is the default of Config.EventMaxBytes.
const DefaultEventMaxBytes = 64 << 10

// DefaultHeldMemory is the default of Config.HeldMemory.
const DefaultHeldMemory = 40 << 20

// delivery is a decoded message on its way from the Consume callback to the
// loop. The sites travel beside the message rather than in it: once
// aggregated, the batch holds them.
type delivery struct {
	t      *tracked
	userID string
	action event.Action
	sites  []string
	// urls are the request's site URLs not resolved yet, for the resolver
	// stage; the loop never sees any.
	urls []string
	// verdict, set by the resolver stage, settles the message at once.
	verdict verdict
	// pending is the stream's undelivered count as the message left it.
	pending uint64
}

type item = batch.Item[*tracked]

// job is a worker's assignment: one user's batch, with the user's lease
// when this replica kept it from the previous batch.
type job struct {
	batch *batch.Batch[*tracked]
	lease *ledger.Lease
}

// result is a worker's report to the loop: a batch with Retry and Dead set
// on its items and the lease if kept, a batch not sent at all (busy or
// unavailable), an invalid event and whether its dead letter is stored, or
// a lease given back.
type result struct {
	batch       *batch.Batch[*tracked]
	lease       *ledger.Lease
	busy        bool  // another replica serves the user
	unavailable error // the ledger could not be reached
	invalid     *tracked
	dlqErr      error
	released    bool
}

// Run consumes until ctx is cancelled, then stops pulling, flushes what it
// holds, waits up to ShutdownTimeout for Graph calls in flight, acks what
// succeeded and NAKs the rest for redelivery. It returns nil on a clean stop.
func (h *Handler) Run(ctx context.Context, open OpenConsumer) error {
	if h.cfg.Conn == nil {
		return errors.New("handler: run: no connection for acknowledgements")
	}
	inbox := newMailbox()
	in := newIntake(h.cfg.MaxAckPending, h.cfg.HeldMemory, h.cfg.HeldPayloadBytes)
	if h.cfg.Pace != nil {
		in.setLimit(h.intakeLimit(h.cfg.Pace()))
	}
	l := &loop{
		intake:  in,
		h:       h,
		agg:     batch.New[*tracked](h.cfg.BatchMaxSites, h.cfg.BatchLinger),
		results: make(chan result, 2*h.workerLimit()),
		inbox:   inbox,
		leases:  make(map[string]keptLease),
		busy:    make(map[string]int),
	}
	// Workers outlive ctx during shutdown so in-flight calls can finish;
	// workCtx bounds them.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	resolver := h.startResolver(ctx, inbox)
	sub, err := h.subscribe(ctx, open, inbox, in, resolver)
	if err != nil {
		resolver.stop()
		if ctx.Err() != nil {
			return nil // stopped before it started: nothing held, nothing lost
		}
		return err
	}
	h.log.Info().Int("maxAckPending", h.cfg.MaxAckPending).Int("batchMaxSites", h.cfg.BatchMaxSites).
		Str("batchLinger", h.cfg.BatchLinger.String()).Msg("consuming")
	runErr := l.run(ctx, workCtx, sub)
	// Callbacks waiting for a slot must finish for the subscription to drain.
	in.close()
	sub.stop()
	// After the subscription, so no callback still submits; before the
	// final flush, which then finds what the stage held in the inbox.
	resolver.stop()
	l.shutdown(workCtx, cancelWork)
	return runErr
}

// Acknowledgement bodies, as the JetStream API defines them.
var (
	ackBody      = []byte("+ACK")
	progressBody = []byte("+WPI")
)

// settle acks or NAKs a done message. A message whose dead letter could not
// be stored is NAKed whatever retry says, and counted as stranded until a
// later delivery stores it.
func (h *Handler) settle(t *tracked, retry bool) {
	h.metrics.strand(t.seq(), t.unstored, h.cfg.Now())
	if t.unstored {
		retry = true
	}
	if !retry {
		if err := h.cfg.Conn.Publish(t.reply(), ackBody); err != nil {
			h.log.Warn().Err(err).Uint64("seq", t.seq()).Msg("ack failed; the message will be redelivered")
		}
		h.metrics.settled(true)
		return
	}
	delay := h.nakFor(t)
	if err := h.cfg.Conn.Publish(t.reply(), fmt.Appendf(nil, "-NAK {\"delay\": %d}", delay.Nanoseconds())); err != nil {
		h.log.Warn().Err(err).Uint64("seq", t.seq()).Msg("nak failed; the message will be redelivered after AckWait")
	}
	h.metrics.settled(false)
}

// nakFor is t's NAK delay: redeliveryDelay, or, for a request waiting for
// a new user's account, the wait newUser chose (the window's pace, not the
// failures' back-off, which the waits' deliveries must not drive), never
// shorter than a Retry-After up to NakMaxDelay.
func (h *Handler) nakFor(t *tracked) time.Duration {
	if w := t.userWait(); w > 0 {
		return max(w, min(t.retryAfter(), h.cfg.NakMaxDelay))
	}
	return h.redeliveryDelay(uint64(t.delivered), t.retryAfter())
}

// redeliveryDelay is the NAK delay: the backoff for the delivery count, or
// the pause Graph asked for if that is longer, but never more than
// NakMaxDelay, whatever Graph asked for.
func (h *Handler) redeliveryDelay(delivered uint64, notBefore time.Duration) time.Duration {
	return min(max(h.nakDelay(delivered), notBefore), h.cfg.NakMaxDelay)
}

// nakDelay grows with the delivery count so a struggling Graph sees less
// traffic, using the same exponential policy as in-process retries.
func (h *Handler) nakDelay(delivered uint64) time.Duration {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = h.cfg.NakBaseDelay
	b.MaxInterval = h.cfg.NakMaxDelay
	b.Multiplier = 2
	b.RandomizationFactor = 0.2
	b.MaxElapsedTime = 0
	b.Reset()
	d := b.NextBackOff()
	for i := uint64(1); i < delivered; i++ {
		d = b.NextBackOff()
	}
	return d
}

// strandedHorizon is how long a stranded request not seen again still
// counts: longer than any NAK delay and AckWait, so one that is coming back
// is not forgotten in between.
func (h *Handler) strandedHorizon() time.Duration {
	return 2*h.cfg.NakMaxDelay + h.cfg.AckWait
}

// lastDelivery reports whether t has had every delivery SITEFOLLOW_MAX_DELIVER
// allows, not counting those spent waiting for a new user's account (read
// from Waits only when the delivery count alone would say so). The limit
// is applied here, not by JetStream (the consumer's own MaxDeliver is
// unlimited): a request whose dead letter cannot be stored must stay
// redeliverable, never be left in the stream undelivered.
func (h *Handler) lastDelivery(ctx context.Context, t *tracked) bool {
	if h.cfg.MaxDeliver <= 0 || uint64(t.delivered) < uint64(h.cfg.MaxDeliver) {
		return false
	}
	waits, ok := h.waits(ctx, t)
	if !ok {
		return false
	}
	return uint64(t.delivered)-min(waits, uint64(t.delivered)) >= uint64(h.cfg.MaxDeliver)
}

// errConsumerGone classifies consume errors after which the subscription
// must be rebuilt rather than left to the client's own recovery.
func consumerGone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound)
}
