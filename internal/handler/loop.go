package handler

import (
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
	inbox   chan delivery
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
	// lastArrival is when that message arrived. Together they tell when the
	// stream is drained and quiet, so waiting out the linger gains nothing.
	backlog     uint64
	lastArrival time.Time
	quiet       bool
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
		l.dispatch(workCtx, false)
		armed = l.armTimer(linger, armed)
		select {
		case <-ctx.Done():
			return nil
		case d := <-l.inbox:
			l.acceptBurst(d)
			if h.cfg.BatchQuiet > 0 && l.backlog == 0 {
				quiet.Reset(h.cfg.BatchQuiet)
			}
		case <-quiet.C:
			l.quiet = l.backlog == 0 && h.cfg.Now().Sub(l.lastArrival) >= h.cfg.BatchQuiet
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
			h.metrics.gauges(sites, users, l.held.n, l.intake.bound())
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
// (a message in, a batch back) leave it where it was.
func (l *loop) armTimer(t *time.Timer, armed time.Time) time.Time {
	at, ok := l.agg.Deadline()
	if !ok || at.Equal(armed) {
		return armed
	}
	t.Reset(max(at.Sub(l.h.cfg.Now()), 0))
	return at
}

// acceptBurst takes t and whatever else is already waiting, up to a bound,
// so a busy inbox costs one dispatch and one timer check per burst rather
// than per message.
func (l *loop) acceptBurst(d delivery) {
	now := l.h.cfg.Now()
	l.lastArrival, l.quiet = now, false
	l.accept(d, now)
	for range 255 {
		select {
		case d := <-l.inbox:
			l.accept(d, now)
		default:
			return
		}
	}
}

func (l *loop) accept(d delivery, now time.Time) {
	t := d.t
	l.held.add(t)
	l.backlog = t.meta.NumPending
	h := l.h
	if t.err != nil {
		h.metrics.event(false)
		l.invalid = append(l.invalid, t)
		return
	}
	h.metrics.event(true)
	l.agg.Add(d.req.UserID, d.req.Action, d.req.SiteIDs, t.meta.Sequence.Stream, t, now)
}

// dispatch starts workers for due batches and invalid events while fewer
// than the worker limit run. force flushes everything pending (shutdown).
func (l *loop) dispatch(workCtx context.Context, force bool) {
	h := l.h
	if force || l.quiet {
		l.agg.FlushAll()
	}
	for l.workers < h.workerLimit() && len(l.invalid) > 0 {
		t := l.invalid[0]
		l.invalid = l.invalid[1:]
		l.workers++
		go func() {
			l.results <- result{invalid: t, dlqErr: h.deadLetterInvalid(workCtx, t)}
		}()
	}
	for l.workers < h.workerLimit() {
		b, ok := l.agg.Next(h.cfg.Now())
		if !ok {
			break
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
}

// release forgets a settled message and frees its intake slot.
func (l *loop) release(t *tracked) {
	l.held.remove(t)
	l.intake.give(1, len(t.payload))
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
			h.log.Error().Err(r.dlqErr).Uint64("seq", r.invalid.meta.Sequence.Stream).Msg("invalid event kept for redelivery: its dead letter cannot be stored")
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
	now := l.h.cfg.Now()
	for t := l.held.root.next; t != nil && t != &l.held.root; t = t.next {
		if now.Sub(t.progress) < l.h.cfg.AckWait/3 {
			continue
		}
		t.progress = now
		if err := l.h.cfg.Conn.Publish(t.reply, progressBody); err != nil {
			l.h.log.Warn().Err(err).Uint64("seq", t.meta.Sequence.Stream).Msg("in-progress signal failed")
		}
	}
}

// shutdown flushes what is held, waits up to ShutdownTimeout for workers,
// then cancels them; whatever did not finish is NAKed for redelivery.
func (l *loop) shutdown(workCtx context.Context, cancelWork context.CancelFunc) {
	h := l.h
	for drained := false; !drained; {
		select {
		case d := <-l.inbox:
			l.accept(d, h.cfg.Now())
		default:
			drained = true
		}
	}
	deadline := time.NewTimer(h.cfg.ShutdownTimeout)
	defer deadline.Stop()
	h.log.Info().Int("held", l.held.n).Msg("shutting down: flushing pending batches")
	for {
		l.dispatch(workCtx, true)
		if l.workers == 0 {
			break
		}
		select {
		case r := <-l.results:
			l.finish(workCtx, r)
		case <-deadline.C:
			h.log.Warn().Int("workers", l.workers).Msg("shutdown timeout: cancelling Graph calls in flight")
			cancelWork()
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
