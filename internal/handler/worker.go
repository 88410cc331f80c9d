package handler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sitefollow/sitefollow/internal/batch"
	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphclient"
	"github.com/sitefollow/sitefollow/internal/ledger"
)

// process runs one user's batch against Graph under the user's lease and
// dead-letters what Graph rejected. It marks Retry on items that must come
// back, Dead on those dead-lettered, Skip on those a newer request already
// covers.
func (h *Handler) process(ctx context.Context, j job) result {
	b := j.batch
	res := result{batch: b}
	ls := j.lease
	if ls == nil {
		var err error
		ls, err = h.ledger.Acquire(ctx, b.Key())
		switch {
		case errors.Is(err, ledger.ErrBusy):
			h.metrics.lease("busy")
			res.busy = true
			return res
		case err != nil:
			h.metrics.lease("error")
			res.unavailable = err
			return res
		}
		h.metrics.lease("acquired")
	}
	sending, err := h.screen(ctx, b, ls)
	if err == nil {
		err = h.ledger.Intend(ctx, ls, sending)
	}
	if err != nil {
		for i := range b.Items {
			b.Items[i].Skip, b.Items[i].Defer = false, false
		}
		h.release(ctx, ls)
		res.unavailable = err
		return res
	}
	stopKeepAlive := h.ledger.KeepAlive(ctx, ls)
	outcomes := h.send(ctx, b, ls)
	stopKeepAlive()
	// What Graph answered must be recorded even when shutdown cut the calls
	// short, or it is sent again for nothing.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := h.ledger.Commit(cctx, ls, outcomes); err != nil {
		// Unrecorded, an applied request could be overtaken by an older one
		// on redelivery elsewhere: redeliver it, so it is applied again and
		// recorded before it is acknowledged. Its pending mark, written
		// before the call, holds older requests back meanwhile.
		h.metrics.lease("lost")
		h.log.Warn().Err(err).Str("user", b.UserID).Int("sites", len(outcomes)).Msg("cannot record the batch's outcome; applied sites will be redelivered")
		for i := range b.Items {
			if o := outcomes[b.Items[i].Key()]; o.Outcome == ledger.Applied {
				b.Items[i].Retry = true
			}
		}
		h.release(ctx, ls)
		return res
	}
	if ls.Age(h.cfg.Now()) < h.cfg.LeaseHold && ctx.Err() == nil && b.NotBefore.IsZero() {
		res.lease = ls
		return res
	}
	h.release(ctx, ls)
	return res
}

// inDoubtWait is how long an item waits when a newer request for its site
// is in doubt: that request comes back after its NAK delay or AckWait, very
// likely to another replica, which needs this user's lease to settle it.
// So a batch with deferred items gives the lease up, and waits longer than
// a busy replica's longest back-off (busyDelay) before taking it again.
const inDoubtWait = 2 * time.Second

// screen marks Skip on items the user's record shows a request at least as
// new was applied for, and Defer on those for which a newer request was sent
// and is still unsettled (its replica died, or Graph did not answer): such
// an older one must not go out until then, or it could land after it. It
// returns the rest, to be sent (site key → sequence).
func (h *Handler) screen(ctx context.Context, b *batch.Batch[*tracked], ls *ledger.Lease) (map[string]uint64, error) {
	sending := make(map[string]uint64, len(b.Items))
	for i := range b.Items {
		it := &b.Items[i]
		if ls.Applied(it.Key()) >= it.Ticket.Seq {
			// Applied already (an earlier delivery), or superseded by a
			// newer request applied meanwhile, here or on another replica.
			it.Skip = true
			continue
		}
		if p := ls.Pending(it.Key()); p > it.Ticket.Seq {
			inStream, err := h.ledger.InStream(ctx, p)
			if err != nil {
				return nil, err
			}
			if inStream {
				it.Defer = true
				b.NotBefore = h.cfg.Now().Add(inDoubtWait)
				h.metrics.lease("deferred")
				continue
			}
			// Gone from the stream: settled without clearing its mark.
		}
		sending[it.Key()] = it.Ticket.Seq
	}
	return sending, nil
}

// send makes the batch's Graph calls, each permitted only while the lease
// outlives it, and returns every item's outcome by site key.
func (h *Handler) send(ctx context.Context, b *batch.Batch[*tracked], ls *ledger.Lease) map[string]ledger.Settlement {
	permit := graphclient.WithPermit(func(ctx context.Context, callTimeout time.Duration) error {
		return h.ledger.Ensure(ctx, ls, callTimeout+leaseMargin)
	})
	outcomes := make(map[string]ledger.Settlement, len(b.Items))
	for i := range b.Items {
		if it := &b.Items[i]; it.Skip {
			h.metrics.skipped(it.Action)
			outcomes[it.Key()] = ledger.Settlement{Seq: it.Ticket.Seq, Outcome: ledger.Settled}
		}
	}
	calls := b.Calls(h.cfg.BatchMaxSites)
	if len(calls) == 0 {
		return outcomes
	}
	select {
	case h.graphSlots <- struct{}{}:
	case <-ctx.Done():
		// Shutdown cut it short before any call: nothing was sent, and
		// everything comes back.
		for _, call := range calls {
			for _, it := range call {
				it.Retry = true
				outcomes[it.Key()] = ledger.Settlement{Seq: it.Ticket.Seq, Outcome: ledger.Settled}
			}
		}
		return outcomes
	}
	defer func() { <-h.graphSlots }()
	if m, ok := h.graph.(Mixer); ok && m.Mixes() {
		h.sendMixed(ctx, m, b.UserID, calls, permit, outcomes)
		return outcomes
	}
	for _, call := range calls {
		op := graphclient.Add
		if call[0].Action == event.Unfollow {
			op = graphclient.Remove
		}
		sites := make([]string, len(call))
		for i, it := range call {
			sites[i] = it.Site
		}
		results := h.graph.Apply(ctx, b.UserID, op, sites, permit)
		for i, it := range call {
			outcomes[it.Key()] = ledger.Settlement{Seq: it.Ticket.Seq, Outcome: h.resolve(ctx, b.UserID, it, results[i])}
		}
	}
	return outcomes
}

// release gives a lease back; if that fails it ends by its TTL.
func (h *Handler) release(ctx context.Context, ls *ledger.Lease) {
	if err := h.ledger.Release(context.WithoutCancel(ctx), ls); err != nil {
		h.log.Debug().Err(err).Stringer("lease", ls).Msg("lease not released; it expires by its TTL")
	}
}

// resolve settles one site of a call and says what became of it: applied,
// settled without being applied (dead-lettered, or refused for good), or
// unknown (no answer from Graph; it is redelivered).
func (h *Handler) resolve(ctx context.Context, userID string, it *item, r graphclient.SiteResult) ledger.Outcome {
	t := it.Ticket.Msg
	var newUser userWait
	outcome := r.Outcome
	if r.Outcome == graphclient.Rejected && r.Err != nil && r.Err.Code == graphclient.CodeUserNotFound {
		// Graph cannot see the user yet: a new account, announced by HR
		// before it is provisioned. A site that waits is not settled.
		if newUser = h.newUser(t, r.Err); newUser.delay > 0 {
			outcome = graphclient.Unresolved
		}
	}
	h.metrics.site(it.Action, outcome, it.Superseded())
	notPermitted := r.Err != nil && r.Err.Code == graphclient.CodeNotPermitted
	// Without a token nothing was sent: the credential is broken (a wrong
	// certificate, an expired federated token, Entra down) until operators
	// or Entra mend it, which is no fault of the request.
	tokenless := r.Err != nil && r.Err.Code == graphclient.CodeTokenUnavailable
	switch {
	case r.Outcome == graphclient.Applied:
		return ledger.Applied
	case newUser.delay > 0:
		// Nothing was applied, nothing is in doubt: it comes back after
		// the wait.
		it.Retry = true
		h.wait(ctx, t, newUser.delay)
		return ledger.Settled
	case newUser.f.Code != "":
		return h.deadLetterSite(ctx, userID, it, r.Outcome, newUser.f)
	case r.Outcome == graphclient.Unresolved && (!h.lastDelivery(ctx, t) || ctx.Err() != nil || notPermitted || tokenless):
		// A call cut short by shutdown, never sent because the lease could
		// not be kept, or never sent for want of a token says nothing about
		// the site: leave it to redelivery even on the last delivery.
		it.Retry = true
		if r.Err != nil {
			t.holdRetryAfter(r.Err.RetryAfter)
		}
		return ledger.Unknown
	}
	f := event.Failure{Code: event.CodeRetriesExhausted, Message: "no answer from Graph"}
	if r.Err != nil {
		f = event.Failure{Code: r.Err.Code, Message: r.Err.Message, HTTPStatus: r.Err.HTTPStatus,
			RequestID: r.Err.RequestID, ClientRequestID: r.Err.ClientRequestID}
	}
	if r.Outcome == graphclient.Unresolved {
		if t.rare != nil && t.rare.waits > 0 {
			f.Message = fmt.Sprintf("gave up after %d deliveries (and %d more spent waiting for the user's new account): %s: %s",
				uint64(t.delivered)-min(t.rare.waits, uint64(t.delivered)), t.rare.waits, f.Code, f.Message)
		} else {
			f.Message = fmt.Sprintf("gave up after %d deliveries: %s: %s", t.delivered, f.Code, f.Message)
		}
		f.Code = event.CodeRetriesExhausted
	}
	return h.deadLetterSite(ctx, userID, it, r.Outcome, f)
}

// deadLetterSite stores the dead letter of one site with failure f and
// says what became of it; outcome is Graph's verdict on the site.
func (h *Handler) deadLetterSite(ctx context.Context, userID string, it *item, outcome graphclient.Outcome, f event.Failure) ledger.Outcome {
	t := it.Ticket.Msg
	// The site's own request, not the whole event again: a dead letter per
	// rejected site of a large event would otherwise repeat all of it.
	req := t.request(userID)
	d := h.deadLetter(t, f)
	d.UserID, d.Action, d.SiteID = userID, it.Action, it.Site
	req.Action = it.Action
	d.Event, d.Narrowed = event.NarrowedEvent(req, it.Site), true
	if err := h.dlq.Publish(ctx, d); err != nil {
		h.log.Error().Err(err).Str("user", userID).Str("site", it.Site).Str("code", event.Truncate(f.Code, logCodeBytes)).
			Uint64("seq", t.seq()).Msg("dead-letter publish failed; the request will be redelivered")
		it.Retry = true
		t.unstored = true
		h.metrics.deadLetterFailed()
		if outcome == graphclient.Unresolved {
			return ledger.Unknown
		}
		return ledger.Settled
	}
	it.Dead = true
	h.metrics.deadLettered(dlq.Label(f.Code))
	h.log.Info().Str("user", userID).Str("action", string(it.Action)).Str("site", it.Site).
		Str("code", event.Truncate(f.Code, logCodeBytes)).Int("httpStatus", f.HTTPStatus).Msg("site dead-lettered")
	return ledger.Settled
}

// logCodeBytes bounds an error code from outside in a log line; the full
// code, bounded too, is in the dead letter.
const logCodeBytes = 256

func (h *Handler) deadLetter(t *tracked, f event.Failure) event.DeadLetter {
	o := t.origin.Value()
	return event.DeadLetter{
		Error:    f,
		Attempts: int(t.delivered),
		Replays:  t.replays(),
		DeadAt:   h.cfg.Now().UTC(),
		Origin: event.Origin{Stream: o.stream, Sequence: t.seq(), Subject: o.subject,
			StreamCreated: o.created},
	}
}

// deadLetterInvalid stores the dead letter for an event that failed
// validation. Graph is never called for it.
func (h *Handler) deadLetterInvalid(ctx context.Context, t *tracked) error {
	bad := t.invalid()
	d := h.deadLetter(t, event.Failure{Code: event.CodeInvalidEvent, Message: bad.err.Error()})
	d.UserID, d.Action = bad.userID, bad.action
	d.SetPayloadPrefix(bad.payload, bad.size)
	if err := h.dlq.Publish(ctx, d); err != nil {
		h.metrics.deadLetterFailed()
		return fmt.Errorf("dead-letter invalid event %d: %w", t.seq(), err)
	}
	h.metrics.deadLettered(event.CodeInvalidEvent)
	h.log.Warn().Uint64("seq", t.seq()).Str("subject", event.Truncate(t.origin.Value().subject, logCodeBytes)).
		Str("reason", event.Truncate(bad.err.Error(), 1024)).Msg("invalid event dead-lettered")
	return nil
}
