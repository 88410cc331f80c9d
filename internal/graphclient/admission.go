package graphclient

import (
	"context"
	"net/http"
	"time"
)

// gateMargin is added to every Retry-After so that rounding between our
// clock and Graph's never lets a call through a moment too early.
const gateMargin = 25 * time.Millisecond

// admission is the one place the Client throttles itself: every request
// enters through it before it goes out, and every answer is observed by it.
// It owns the app-wide throttle gate, which holds every call back while
// Graph asks for a pause, and the pacer, which spreads calls just under the
// rate Graph grants. The rest of the package uses only enter, observe and
// the ticket enter returns.
type admission struct {
	gate          *gate
	pacer         *pacer
	now           func() time.Time
	maxRetryAfter time.Duration
	metrics       *Metrics
}

func newAdmission(now func() time.Time, maxRetryAfter time.Duration, metrics *Metrics) *admission {
	return &admission{
		gate:          newGate(now),
		pacer:         newPacer(),
		now:           now,
		maxRetryAfter: maxRetryAfter,
		metrics:       metrics,
	}
}

// ticket is one admitted attempt. Its holder calls done once the attempt's
// answer is handled, on every path; a ticket enter returned with an error
// may be done too. It holds nothing yet: it is where a limit on concurrent
// requests would be released.
type ticket struct {
	a       *admission
	maxWait time.Duration
}

// done releases the ticket.
func (t ticket) done() {}

// recheck waits for the gate again before another request of the admitted
// attempt goes out (once its token is in hand, and the re-send after a
// 401): time has passed since enter, and another call may have been
// throttled meanwhile. The attempt paid its pace in enter, so the pacer is
// not asked again. Its errors are enter's.
func (t ticket) recheck(ctx context.Context) error {
	return t.a.waitGate(ctx, t.maxWait)
}

// enter waits until a request may go out: for the throttle gate, then for
// the pacer. If the gate closed again while the request waited on the
// pacer, it queues afresh: calls released together when a Retry-After ends
// would otherwise go out as one burst and be throttled again. It returns a
// *gateTooLongError (without waiting) when the gate stays closed for longer
// than maxWait, or the context's error.
func (a *admission) enter(ctx context.Context, maxWait time.Duration) (ticket, error) {
	for {
		if err := a.waitGate(ctx, maxWait); err != nil {
			return ticket{}, err
		}
		if err := a.pacer.wait(ctx); err != nil {
			return ticket{}, err
		}
		if !a.gate.until().After(a.now()) {
			return ticket{a: a, maxWait: maxWait}, nil
		}
	}
}

// waitGate blocks until the app-wide throttle gate opens, unless that is
// further away than maxWait, and counts the time waited.
func (a *admission) waitGate(ctx context.Context, maxWait time.Duration) error {
	waited, err := a.gate.wait(ctx, maxWait)
	a.metrics.throttleWaited(waited)
	return err
}

// observe is the one place an answer's app-wide meaning is taken: a
// transient answer's Retry-After closes the gate, and the pacer learns that
// 429 and 509 (and a 503 with Retry-After; SharePoint throttles with both)
// mean the app is over its budget, while any other answer means the call
// was admitted. No answer says nothing.
func (a *admission) observe(now time.Time, resp *response) {
	if resp == nil {
		return
	}
	if !transientStatus(resp.status) {
		a.pacer.admit(now)
		return
	}
	wait, hasWait := resp.retryAfter(now)
	if hasWait {
		// The pause applies to the whole app: close the gate at once, before
		// anything else is done with the answer, so no other call slips out
		// meanwhile. It closes for MaxRetryAfter at most: a longer pause is
		// left to the caller's redelivery of this call's sites (see
		// handleTransient), and must not hold every other user's calls
		// back for as long as Graph, or whoever answers, asks.
		a.gate.push(min(wait+gateMargin, a.maxRetryAfter))
	}
	switch {
	case resp.status == http.StatusTooManyRequests, resp.status == 509,
		resp.status == http.StatusServiceUnavailable && hasWait:
		a.pacer.throttle(now, min(wait, a.maxRetryAfter))
	default:
		a.pacer.admit(now)
	}
}

// throttledUntil is the time before which the gate lets no request out.
func (a *admission) throttledUntil() time.Time { return a.gate.until() }

// paceLimit is the pacer's current limit in calls per second.
func (a *admission) paceLimit() float64 { return a.pacer.limit() }
