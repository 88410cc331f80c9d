package graphclient

import (
	"context"
	"fmt"
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

// push moves the gate to now+d unless it is already further out, and says
// whether it moved; the gate never moves back, so a short Retry-After
// cannot cut a longer one short.
func (g *gate) push(d time.Duration) bool {
	t := g.now().Add(d)
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.After(g.notBefore) {
		g.notBefore = t
		return true
	}
	return false
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
