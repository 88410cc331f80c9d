package graphclient

import (
	"context"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// gateMargin is added to every Retry-After so that rounding between our
// clock and Graph's never lets a call through a moment too early.
const gateMargin = 25 * time.Millisecond

// Pauses for a 429 or 509 that names no wait: short at first, since a token bucket refills in a fraction
// of a second, doubling while they repeat, up to a cap.
const (
	bareThrottlePause    = 250 * time.Millisecond
	bareThrottleMaxPause = 8 * time.Second
)

// admission is the one place the Client throttles itself: every request
// enters through it before it goes out, and every answer is observed
// through the ticket it returns. It owns
//   - the app-wide throttle gate, which holds every call back while Graph
//     asks for a pause (and, through the shared budget, while it asks
//     another replica);
//   - the concurrency bound (flight), which adapts to 429/503;
//   - the pacer, which spreads calls just under the budget.
type admission struct {
	gate          *gate
	pacer         *pacer
	flight        *flight
	now           func() time.Time
	maxRetryAfter time.Duration
	metrics       *Metrics
	// throttled, when set, tells other replicas of a throttle.
	throttled func(pause time.Duration, rate float64)
	// waiting counts requests inside enter, for the shared budget.
	waiting atomic.Int64

	mu sync.Mutex
	// bare counts throttles in a row that named no wait.
	bare int
}

// admissionConfig is what New derives from Config for admission.
type admissionConfig struct {
	now            func() time.Time
	maxRetryAfter  time.Duration
	maxConcurrency int
	pacing         Pacing
	metrics        *Metrics
	throttled      func(pause time.Duration, rate float64)
}

func newAdmission(cfg admissionConfig) *admission {
	return &admission{
		gate:          newGate(cfg.now),
		pacer:         newPacer(cfg.pacing, cfg.now()),
		flight:        newFlight(cfg.maxConcurrency),
		now:           cfg.now,
		maxRetryAfter: cfg.maxRetryAfter,
		metrics:       cfg.metrics,
		throttled:     cfg.throttled,
	}
}

// ticket is one admitted attempt: a concurrency slot, and what its answers
// said. Its holder calls done once the attempt's answer is handled, on
// every path; a nil ticket (enter failed) is safe to use.
type ticket struct {
	a          *admission
	maxWait    time.Duration
	overloaded bool
	good       bool
}

// done releases the ticket's concurrency slot, shrinking the bound if the
// attempt met the first throttle of an episode.
func (t *ticket) done() {
	if t == nil {
		return
	}
	t.a.flight.leave(t.overloaded, t.good)
	t.a.metrics.concurrency(t.a.flight.bound())
}

// recheck waits for the gate again before another request of the admitted
// attempt goes out (once its token is in hand, and the re-send after a
// 401): time has passed since enter, and another call may have been
// throttled meanwhile. The attempt paid its pace in enter, so the pacer is
// not asked again. It says how long it waited; its errors are enter's.
func (t *ticket) recheck(ctx context.Context) (time.Duration, error) {
	return t.a.waitGateFor(ctx, t.maxWait)
}

// enter waits until a request may go out: for the throttle gate, a
// concurrency slot, then the pacer. If the gate closed again while the
// request waited, it queues afresh: calls released together when a
// Retry-After ends would otherwise go out as one burst and be throttled
// again. It returns a *gateTooLongError (without waiting) when the gate
// stays closed for longer than maxWait, or the context's error.
func (a *admission) enter(ctx context.Context, maxWait time.Duration) (*ticket, error) {
	a.waiting.Add(1)
	defer a.waiting.Add(-1)
	for {
		if err := a.waitGate(ctx, maxWait); err != nil {
			return nil, err
		}
		if err := a.flight.enter(ctx); err != nil {
			return nil, err
		}
		t := &ticket{a: a, maxWait: maxWait}
		if err := a.pacer.wait(ctx, a.now); err != nil {
			t.done()
			return nil, err
		}
		if !a.gate.until().After(a.now()) {
			return t, nil
		}
		t.done()
	}
}

// waitGate blocks until the app-wide throttle gate opens, unless that is
// further away than maxWait, and counts the time waited.
func (a *admission) waitGate(ctx context.Context, maxWait time.Duration) error {
	_, err := a.waitGateFor(ctx, maxWait)
	return err
}

// waitGateFor is waitGate that also says how long it waited.
func (a *admission) waitGateFor(ctx context.Context, maxWait time.Duration) (time.Duration, error) {
	waited, err := a.gate.wait(ctx, maxWait)
	a.metrics.throttleWaited(waited)
	return waited, err
}

// observe is the one place an answer's app-wide meaning is taken. A
// throttle (429, 509, or 503: SharePoint throttles with both) closes the
// gate for its Retry-After (or RateLimit-Reset, whichever is longer), or
// for a short, growing pause when it names none; it cuts the pacer and,
// once per episode, the concurrency bound, and tells the other replicas.
// Any other answer means the call was admitted. Every answer's RateLimit
// headers feed the pacer. No answer says nothing.
func (t *ticket) observe(now time.Time, resp *response) {
	if t == nil || resp == nil {
		return
	}
	a := t.a
	q := parseQuota(resp.header)
	if !throttleStatus(resp.status) {
		a.mu.Lock()
		a.bare = 0
		a.mu.Unlock()
		a.pacer.admit(now, q)
		t.good = resp.status < 500
		if q.ok && q.remaining < a.pacer.cfg.CallCost {
			// The window is spent: wait for it rather than for a 429.
			if pause, extended := a.pause(now, q.reset); extended && a.throttled != nil {
				a.throttled(pause, 0)
			}
		}
		a.metrics.pace(a.pacer.limit())
		return
	}
	wait, hasWait := resp.retryAfter(now)
	if !hasWait && resp.status != http.StatusServiceUnavailable {
		a.mu.Lock()
		wait, hasWait = min(bareThrottlePause<<min(a.bare, 16), bareThrottleMaxPause), true
		a.bare++
		a.mu.Unlock()
	}
	// The pause applies to the whole app: close the gate at once, before
	// anything else is done with the answer, so no other call slips out
	// meanwhile. It closes for MaxRetryAfter at most: a longer pause is left
	// to the caller's redelivery of this call's sites (see handleTransient),
	// and must not hold every other user's calls back for as long as Graph,
	// or whoever answers, asks. A bare 503 may be one server's trouble
	// rather than the app's budget: it slows the pace but closes no gate,
	// and the call's own backoff spaces its retries.
	var pause time.Duration
	var extended bool
	if hasWait {
		pause, extended = a.pause(now, wait)
	}
	cut := a.pacer.throttle(now, q)
	t.overloaded = cut > 0
	if (cut > 0 || extended) && a.throttled != nil {
		// Every pause that reaches further, not only the episode's first:
		// a peer that missed one would send into it.
		a.throttled(pause, cut)
	}
	a.metrics.pace(a.pacer.limit())
}

// pauseEarly closes the gate for a throttle's stated wait as soon as its
// headers arrive; observe handles the answer in full later (and finds the
// gate already where it puts it).
func (a *admission) pauseEarly(now time.Time, h http.Header) {
	wait, ok := (&response{header: h}).retryAfter(now)
	if !ok {
		return
	}
	if pause, extended := a.pause(now, wait); extended && a.throttled != nil {
		a.throttled(pause, 0)
	}
}

// pause closes the gate for d (plus the margin, at most MaxRetryAfter) and
// tells the pacer; it returns the pause applied and whether it moved the
// gate further out.
func (a *admission) pause(now time.Time, d time.Duration) (time.Duration, bool) {
	d = min(d+gateMargin, a.maxRetryAfter)
	extended := a.gate.push(d)
	a.pacer.paused(now, now.Add(d))
	return d, extended
}

// adopt applies another replica's throttle signal.
func (a *admission) adopt(pause time.Duration, rate float64) {
	now := a.now()
	if pause > 0 {
		a.pause(now, pause-gateMargin)
	}

	if rate > 0 && !math.IsInf(rate, 0) {
		a.pacer.adopt(now, rate)
	}
	a.metrics.pace(a.pacer.limit())
}

// throttleStatus reports whether an answer says the app is over its
// budget: 429 and 509, and 503, with which SharePoint throttles too.
func throttleStatus(s int) bool {
	return s == http.StatusTooManyRequests || s == 509 || s == http.StatusServiceUnavailable
}

// throttledUntil is the time before which the gate lets no request out.
func (a *admission) throttledUntil() time.Time { return a.gate.until() }

// paceLimit is the pacer's current limit in calls per second.
func (a *admission) paceLimit() float64 { return a.pacer.limit() }
