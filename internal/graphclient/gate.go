package graphclient

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// gate is the app-wide throttle: Graph's limits are per app and tenant, and
// requests sent while throttled still count against them, so one 429 pauses
// every call the Client makes, whichever user it is for.
type gate struct {
	now       func() time.Time
	mu        sync.Mutex
	notBefore time.Time
}

func newGate(now func() time.Time) *gate {
	return &gate{now: now}
}

// push moves the gate to now+d unless it is already further out; the gate
// never moves back, so a short Retry-After cannot cut a longer one short.
func (g *gate) push(d time.Duration) {
	t := g.now().Add(d)
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.After(g.notBefore) {
		g.notBefore = t
	}
}

func (g *gate) until() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.notBefore
}

// gateTooLongError reports a pause longer than the caller accepts to block.
type gateTooLongError struct {
	wait time.Duration
}

func (e *gateTooLongError) Error() string {
	return fmt.Sprintf("graphclient: throttled for another %s", e.wait)
}

// wait blocks until the gate is open, re-reading it after every sleep
// because other calls may push it further meanwhile. It returns how long it
// waited, a *gateTooLongError (without waiting) when the remaining pause
// exceeds limit, or the context's error.
func (g *gate) wait(ctx context.Context, limit time.Duration) (time.Duration, error) {
	var waited time.Duration
	for {
		remaining := g.until().Sub(g.now())
		if remaining <= 0 {
			return waited, nil
		}
		if remaining > limit {
			return waited, &gateTooLongError{wait: remaining}
		}
		t := time.NewTimer(remaining)
		select {
		case <-ctx.Done():
			t.Stop()
			return waited, ctx.Err()
		case <-t.C:
			waited += remaining
		}
	}
}

// maxParsedRetryAfter bounds every parsed Retry-After and RateLimit-Reset,
// whatever its form: a value from outside must not turn into a pause (or a
// redelivery delay) of years. It is the longest SITEFOLLOW_NAK_MAX_DELAY
// allowed; the gate and the redelivery delay apply their own, shorter caps.
const maxParsedRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After (or RateLimit-Reset) value: delay
// seconds, possibly fractional ("2.128"), or an HTTP date. Negative or
// unparsable values are ignored; a date in the past means no wait. The
// result is at most maxParsedRetryAfter.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs < 0 || math.IsNaN(secs) || math.IsInf(secs, 0) {
			return 0, false
		}
		// Round up so a fractional value never shortens the wait.
		return time.Duration(math.Ceil(min(secs, maxParsedRetryAfter.Seconds()) * float64(time.Second))), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	// HTTP dates have whole-second precision; the date itself is the
	// earliest moment Graph accepts, so wait for it in full.
	return min(max(t.Sub(now), 0), maxParsedRetryAfter), true
}
