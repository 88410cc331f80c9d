package handler

import (
	"context"
	"fmt"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphclient"
)

// WaitCounter keeps, per request message (by stream sequence), how many of
// its deliveries were spent waiting for a new user's account: JetStream
// counts every NAK as a delivery, and those must not use up the retries
// MaxDeliver allows for failures. *ledger.Ledger implements it.
type WaitCounter interface {
	// AddWait counts delivery of request seq as a wait, once however often
	// it is told, and keeps the count for ttl after this write.
	AddWait(ctx context.Context, seq, delivery uint64, ttl time.Duration) error
	// Waits is how many deliveries of request seq were counted as waits.
	Waits(ctx context.Context, seq uint64) (uint64, error)
}

// waitIOTimeout bounds a wait count's read or write: the NAK it decorates
// goes out whatever becomes of it.
const waitIOTimeout = 5 * time.Second

// userWait is the new-account window's verdict on a site Graph answered as
// if its user did not exist yet (graphclient.CodeUserNotFound): how long to
// wait before asking again, or, once the window is over, the dead letter's
// failure.
type userWait struct {
	delay time.Duration // 0: do not wait, dead-letter with failure
	f     event.Failure
}

// newUser decides about a site whose user Graph cannot see yet. The
// request's window runs for NewUserWindow from its occurredAt (else its
// publish time); within it the request waits, each wait about as long as
// the time already waited (at least NakBaseDelay, at most maxUserWait),
// the last one landing at the window's end. Past it, or with no window, the
// site is dead-lettered as userNotFound, saying what Graph answered.
func (h *Handler) newUser(t *tracked, e *graphclient.SiteError) userWait {
	start, from := h.windowStart(t)
	end := start.Add(h.cfg.NewUserWindow)
	now := h.cfg.Now()
	if h.cfg.NewUserWindow > 0 && now.Before(end) {
		delay := min(max(now.Sub(start), h.cfg.NakBaseDelay), h.maxUserWait(), end.Sub(now))
		return userWait{delay: max(delay, time.Millisecond)}
	}
	msg := fmt.Sprintf("%s; SITEFOLLOW_NEW_USER_WINDOW is 0, so the user was not waited for", e.Message)
	if h.cfg.NewUserWindow > 0 {
		msg = fmt.Sprintf("%s; the user was still not visible when the new-account window ended at %s (SITEFOLLOW_NEW_USER_WINDOW %v from %s)",
			e.Message, end.UTC().Format(time.RFC3339), h.cfg.NewUserWindow, from)
	}
	return userWait{f: event.Failure{Code: event.CodeUserNotFound, Message: msg, HTTPStatus: e.HTTPStatus,
		RequestID: e.RequestID, ClientRequestID: e.ClientRequestID}}
}

// windowStart is when t's new-account window starts, and what that time
// is, for the dead letter: the request's occurredAt when it has a valid one,
// else the message's publish time. An occurredAt after the publish time
// (a producer's clock ahead) counts as the publish time, so no request can
// wait longer than the window from when it was published.
func (h *Handler) windowStart(t *tracked) (time.Time, string) {
	published := h.cfg.Now()
	if t.stamp > 0 {
		published = time.Unix(0, t.stamp)
	}
	if t.rare != nil && t.rare.occurredAt != "" {
		if at, err := time.Parse(time.RFC3339Nano, t.rare.occurredAt); err == nil && !at.After(published) {
			return at, "occurredAt " + t.rare.occurredAt
		}
	}
	return published, "the publish time " + published.UTC().Format(time.RFC3339Nano)
}

// maxUserWait is the longest wait for a new user: NakMaxDelay, or a 24th
// of the window when that is longer, so a day's window asks Graph about an
// invisible user at most about once an hour once it has waited that long.
func (h *Handler) maxUserWait() time.Duration {
	return max(h.cfg.NakMaxDelay, h.cfg.NewUserWindow/24)
}

// waitTTL is how long a request's wait count is kept after its latest wait:
// past the window's end, then every delivery MaxDeliver allows, each after
// the longest NAK delay or AckWait.
func (h *Handler) waitTTL() time.Duration {
	return h.cfg.NewUserWindow + h.maxUserWait() + time.Duration(max(h.cfg.MaxDeliver, 1)+1)*(h.cfg.NakMaxDelay+h.cfg.AckWait)
}

// wait marks t to be redelivered after delay for a user not visible yet,
// and counts this delivery as a wait, once per delivery. A count that
// cannot be written costs the request one delivery of its retries: it is
// NAKed all the same.
func (h *Handler) wait(ctx context.Context, t *tracked, delay time.Duration) {
	r := t.setRare()
	r.userWait = max(r.userWait, delay)
	if r.waitCounted {
		return
	}
	r.waitCounted = true
	h.metrics.userWaited()
	if h.cfg.Waits == nil {
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), waitIOTimeout)
	defer cancel()
	if err := h.cfg.Waits.AddWait(wctx, t.seq(), uint64(t.delivered), h.waitTTL()); err != nil {
		h.log.Warn().Err(err).Uint64("seq", t.seq()).Msg("cannot count a wait for a new user; it will spend one of the request's deliveries")
	}
}

// waits is how many of t's deliveries were spent waiting for a new user,
// read once per delivery. ok is false when the count cannot be read.
func (h *Handler) waits(ctx context.Context, t *tracked) (n uint64, ok bool) {
	if h.cfg.Waits == nil {
		return 0, true
	}
	r := t.setRare()
	if r.waitsRead {
		return r.waits, true
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), waitIOTimeout)
	defer cancel()
	n, err := h.cfg.Waits.Waits(wctx, t.seq())
	if err != nil {
		h.log.Warn().Err(err).Uint64("seq", t.seq()).Msg("cannot read a request's waits for a new user; it is redelivered rather than dead-lettered")
		return 0, false
	}
	r.waitsRead, r.waits = true, n
	return n, true
}
