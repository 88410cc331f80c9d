package handler

import (
	"cmp"
	"context"
	"time"

	"github.com/sitefollow/sitefollow/internal/batch"
	"github.com/sitefollow/sitefollow/internal/ledger"
)

// loop is the single goroutine owning aggregation and acknowledgement.
type loop struct {
	h       *Handler
	agg     *batch.Aggregator[*tracked]
	held    heldSet
	results chan result
	inbox   *mailbox
	// spare is the inbox's other queue (mailbox.take).
	spare   []delivery
	intake  *intake
	workers int
	invalid []*tracked
	// leases are users' leases kept between batches, by user key.
	leases map[string]keptLease
	// busy counts, by user key, batches handed back in a row because
	// another replica served the user; it sets the wait before the next try.
	busy map[string]int
	// ledgerWarned is when a ledger failure was last logged.
	ledgerWarned time.Time

	// backlog is the stream's undelivered count as of the latest message;
	// lastArrival is when that message arrived. Together they say whether
	// more requests are on their way (a backlog arriving: partial batches
	// keep gathering), the stream is drained and quiet (nothing more to
	// batch with: send everything), or neither (wait out the linger).
	backlog     uint64
	lastArrival time.Time
	quiet       bool
	// stalled says requests remain undelivered but none arrived for the
	// quiet period: the server is not sending more (other replicas hold the
	// consumer's MaxAckPending), so waiting for them gains nothing.
	stalled bool
}

func (l *loop) run(ctx, workCtx context.Context, sub *subscription) error {
	h := l.h
	progress := time.NewTicker(h.cfg.AckWait / 3)
	defer progress.Stop()
	gauges := time.NewTicker(time.Second)
	defer gauges.Stop()
	linger := time.NewTimer(time.Hour)
	defer linger.Stop()
	quiet := time.NewTimer(time.Hour)
	defer quiet.Stop()
	var armed time.Time
	for {
		h.turns.Add(1)
		l.dispatch(workCtx, false)
		armed = l.armTimer(linger, armed)
		select {
		case <-ctx.Done():
			return nil
		case <-l.inbox.ready:
			if l.acceptAll() {
				quiet.Reset(l.quietAfter())
			}
		case <-quiet.C:
			l.settleDown()
		case <-l.intake.fullC:
			// Nothing more can come in: dispatch sends the batches that
			// waited longest to make room.
		case r := <-l.results:
			l.finish(workCtx, r)
		case <-linger.C:
			armed = time.Time{}
		case <-progress.C:
			l.keepAlive()
		case <-gauges.C:
			l.sweepLeases(workCtx)
			if h.cfg.Pace != nil {
				l.intake.setLimit(h.intakeLimit(h.cfg.Pace()))
			}
			h.metrics.pruneStranded(h.cfg.Now().Add(-h.strandedHorizon()))
			sites, users := l.agg.Stats()
			h.metrics.gauges(sites, users, l.held.len(), l.intake.bound())
		case err := <-sub.errs:
			if consumerGone(err) {
				h.log.Warn().Err(err).Msg("consumer lost")
			} else {
				h.log.Warn().Err(err).Msg("consume error; the client recovers on its own")
			}
		case <-sub.cc.Closed():
			// The client stopped consuming by itself (consumer deleted,
			// connection closed, bad request).
			if ctx.Err() == nil {
				sub.restart(ctx)
			}
		}
	}
}

// armTimer points the linger timer at the aggregator's next deadline. It
// resets the timer only when that deadline moved, since most loop turns
// (a message in, a batch back) leave it where it was, and not at all while
// every worker is busy: nothing due could start, and the next worker's
// result wakes the loop anyway.
func (l *loop) armTimer(t *time.Timer, armed time.Time) time.Time {
	if l.workers >= l.h.workerLimit() {
		return armed
	}
	at, ok := l.agg.Deadline()
	if !ok || at.Equal(armed) {
		return armed
	}
	t.Reset(max(at.Sub(l.h.cfg.Now()), 0))
	return at
}

// quietAfter is how long without arrivals makes the stream quiet (drained)
// or stalled (not drained).
func (l *loop) quietAfter() time.Duration {
	if l.h.cfg.BatchQuiet > 0 {
		return l.h.cfg.BatchQuiet
	}
	return l.h.cfg.BatchLinger
}

// settleDown runs when nothing arrived for quietAfter: a drained stream is
// quiet, once for this quiet period; one with requests left is stalled.
func (l *loop) settleDown() {
	if l.h.cfg.Now().Sub(l.lastArrival) < l.quietAfter() {
		return
	}
	if l.backlog == 0 {
		l.quiet = l.h.cfg.BatchQuiet > 0
		return
	}
	l.stalled = true
}

// wait is how long a partial batch waits for more sites now: nothing when
// nothing more is coming (drained and quiet, or shutting down), up to
// maxHold while a backlog is arriving (its users' other requests are on
// their way), the linger otherwise.
func (l *loop) wait(force bool) time.Duration {
	switch {
	case force || l.quiet:
		return 0
	case l.backlog > 0:
		return l.h.maxHold()
	default:
		return l.h.cfg.BatchLinger
	}
}

// acceptAll takes everything the inbox holds: a busy inbox costs one
// dispatch and one timer check per burst rather than per message. It
// reports whether anything arrived.
func (l *loop) acceptAll() bool {
	burst := l.inbox.take(l.spare)
	if len(burst) == 0 {
		l.spare = burst
		return false
	}
	now := l.h.cfg.Now()
	l.lastArrival, l.quiet, l.stalled = now, false, false
	for _, d := range burst {
		l.accept(d, now)
	}
	l.spare = burst
	return true
}

func (l *loop) accept(d delivery, now time.Time) {
	t := d.t
	l.held.add(t)
	l.backlog = d.pending
	h := l.h
	if t.invalid() != nil {
		h.metrics.event(false)
		l.invalid = append(l.invalid, t)
		return
	}
	h.metrics.event(true)
	if d.verdict == settleNak || d.verdict == settleAck {
		// Decided by the resolver stage: nothing of it to send.
		l.release(t)
		h.settle(t, d.verdict == settleNak)
		return
	}
	if id := l.agg.Put(&t.ticket, d.userID, d.action, d.sites, now); id != d.userID {
		t.setRare().user = d.userID
	}
}

// dispatch starts workers for due batches and invalid events while fewer
// than the worker limit run. force makes everything pending due (shutdown).
// While a backlog arrives and nothing more can come in (the intake is full,
// or the server sends no more), the batches that waited longest go first,
// however partial: they make room for the rest.
func (l *loop) dispatch(workCtx context.Context, force bool) {
	h := l.h
	l.agg.SetWait(l.wait(force))
	for l.workers < h.workerLimit() && len(l.invalid) > 0 {
		t := l.invalid[0]
		l.invalid = l.invalid[1:]
		l.workers++
		go func() {
			l.results <- result{invalid: t, dlqErr: h.deadLetterInvalid(workCtx, t)}
		}()
	}
	crowded := l.backlog > 0 && (l.stalled || l.intake.full())
	now := h.cfg.Now()
	for l.workers < h.workerLimit() {
		b, ok := l.agg.Next(now)
		if !ok {
			if !crowded || l.agg.FlushOldest(1) == 0 {
				break
			}
			continue
		}
		j := job{batch: b, lease: l.leases[b.Key()].lease}
		delete(l.leases, b.Key())
		if j.lease != nil && j.lease.Age(h.cfg.Now()) >= h.cfg.LeaseHold {
			// Held long enough: let other replicas have a turn at the user.
			l.releaseLeases(workCtx, j.lease)
			j.lease = nil
		}
		l.workers++
		go func() { l.results <- h.process(workCtx, j) }()
	}
	h.visits.Store(l.agg.Visits())
}

// release forgets a settled message and frees its intake slot.
func (l *loop) release(t *tracked) {
	l.held.remove(t)
	payload := 0
	if bad := t.invalid(); bad != nil {
		payload = len(bad.payload)
	}
	l.intake.give(1, t.cost(), payload)
}

// busyDelay is how long a user served by another replica waits before the
// next try: short at first (the other replica's batch is usually one call),
// doubling to a second.
func busyDelay(n int) time.Duration {
	d := 25 * time.Millisecond << min(n, 6)
	return min(d, time.Second)
}

func (l *loop) finish(workCtx context.Context, r result) {
	h := l.h
	l.workers--
	switch {
	case r.released:
		return
	case r.invalid != nil:
		l.release(r.invalid)
		if r.dlqErr != nil {
			r.invalid.unstored = true
			h.log.Error().Err(r.dlqErr).Uint64("seq", r.invalid.seq()).Msg("invalid event kept for redelivery: its dead letter cannot be stored")
		}
		h.settle(r.invalid, r.dlqErr != nil)
		return
	case r.busy || r.unavailable != nil:
		key := r.batch.Key()
		n := l.busy[key]
		l.busy[key] = n + 1
		delay := busyDelay(n)
		if r.unavailable != nil {
			delay = max(delay, time.Second)
			if now := h.cfg.Now(); now.Sub(l.ledgerWarned) >= 10*time.Second {
				// One line per ten seconds: while NATS is away every user's
				// batch fails the same way.
				l.ledgerWarned = now
				h.log.Warn().Err(r.unavailable).Str("user", r.batch.UserID).Msg("ledger unavailable; batches wait and retry")
			}
		}
		l.agg.Return(r.batch, h.cfg.Now().Add(delay))
		return
	}
	key := r.batch.Key()
	delete(l.busy, key)
	for _, d := range l.agg.Complete(r.batch, h.cfg.Now()) {
		l.release(d.Msg)
		h.settle(d.Msg, d.Retry)
	}
	if r.lease != nil {
		// Kept for the user's next batch: in a backlog it comes within a
		// linger. sweepLeases gives it up if not.
		l.leases[key] = keptLease{lease: r.lease, at: h.cfg.Now()}
	}
}

// keptLease is a lease held between a user's batches, since at.
type keptLease struct {
	lease *ledger.Lease
	at    time.Time
}

// sweepLeases gives up kept leases whose user has had nothing to send for a
// linger, so other replicas need not wait for them.
func (l *loop) sweepLeases(workCtx context.Context) {
	now := l.h.cfg.Now()
	var idle []*ledger.Lease
	for key, k := range l.leases {
		if l.agg.Pending(key) == 0 && now.Sub(k.at) >= l.h.cfg.BatchLinger {
			delete(l.leases, key)
			idle = append(idle, k.lease)
		}
	}
	l.releaseLeases(workCtx, idle...)
}

// releaseLeases gives kept leases back, one after the other, in a worker
// of its own.
func (l *loop) releaseLeases(workCtx context.Context, leases ...*ledger.Lease) {
	if len(leases) == 0 {
		return
	}
	l.workers++
	go func() {
		for _, ls := range leases {
			l.h.release(workCtx, ls)
		}
		l.results <- result{released: true}
	}()
}

// keepAlive tells the server that messages held longer than a third of
// AckWait (waiting to batch, on a throttled Graph, on retries) are still
// being worked on, so a slow Graph never causes a redelivery storm.
func (l *loop) keepAlive() {
	now := l.h.ticks(l.h.cfg.Now())
	cutoff := int64(now) - int64(l.h.cfg.AckWait/3/tick)
	failed := 0
	var first error
	for _, t := range l.held.list {
		if int64(t.progress) > cutoff {
			continue
		}
		t.progress = now
		if err := l.h.cfg.Conn.Publish(t.reply(), progressBody); err != nil {
			failed++
			first = cmp.Or(first, err)
		}
	}
	if failed > 0 {
		// One line per round: with hundreds of thousands held, a line per
		// message would flood the log for one cause.
		l.h.log.Warn().Err(first).Int("messages", failed).Msg("in-progress signals failed")
	}
}

// shutdown flushes what is held, waits up to ShutdownTimeout for workers,
// then cancels them; whatever did not finish is NAKed for redelivery.
func (l *loop) shutdown(workCtx context.Context, cancelWork context.CancelFunc) {
	h := l.h
	for {
		burst := l.inbox.take(l.spare)
		if len(burst) == 0 {
			break
		}
		for _, d := range burst {
			l.accept(d, h.cfg.Now())
		}
		l.spare = burst
	}
	deadline := time.NewTimer(h.cfg.ShutdownTimeout)
	defer deadline.Stop()
	h.log.Info().Int("held", l.held.len()).Msg("shutting down: flushing pending batches")
	l.agg.FlushAll()
	for cancelled := false; ; {
		if !cancelled {
			// Once cancelled, a new batch would only fail and come back:
			// what is left is NAKed below.
			l.dispatch(workCtx, true)
		}
		if l.workers == 0 {
			break
		}
		select {
		case r := <-l.results:
			l.finish(workCtx, r)
		case <-deadline.C:
			h.log.Warn().Int("workers", l.workers).Msg("shutdown timeout: cancelling Graph calls in flight")
			cancelWork()
			cancelled = true
		}
	}
	for _, t := range l.held.all() {
		h.settle(t, true)
		l.release(t)
	}
	for key, k := range l.leases {
		h.release(workCtx, k.lease)
		delete(l.leases, key)
	}
}
