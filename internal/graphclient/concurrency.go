package graphclient

import (
	"context"
	"fmt"
	"sync"
)

// flight bounds the Graph calls in flight, with a bound that adapts: it
// shrinks when Graph throttles or is overloaded (429, 503, 509) and grows
// back by one for every quarter of the bound of calls answered well, within
// [lo, hi]. The pacer sets how fast calls start; flight keeps a struggling
// Graph from also facing every call at once.
type flight struct {
	mu       sync.Mutex
	lo, hi   int
	limit    int
	inFlight int
	good     int
	// free is signalled (without blocking) whenever a slot may have
	// become free, waking one waiter, which re-checks.
	free chan struct{}
}

func newFlight(hi int) *flight {
	hi = max(hi, 1)
	return &flight{lo: max(1, hi/8), hi: hi, limit: hi, free: make(chan struct{}, 1)}
}

// enter waits for a slot.
func (f *flight) enter(ctx context.Context) error {
	for {
		f.mu.Lock()
		if f.inFlight < f.limit {
			f.inFlight++
			more := f.inFlight < f.limit
			f.mu.Unlock()
			if more {
				// Pass a wake-up on: two slots freed at once signal once.
				f.signal()
			}
			return nil
		}
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("concurrency: %w", ctx.Err())
		case <-f.free:
		}
	}
}

// leave frees a slot. overloaded (once per throttle episode: the pacer's
// cooldown) shrinks the bound; a good answer helps it grow.
func (f *flight) leave(overloaded, good bool) {
	f.mu.Lock()
	f.inFlight--
	switch {
	case overloaded:
		f.limit = max(f.lo, f.limit*9/10)
		f.good = 0
	case good && f.limit < f.hi:
		f.good++
		if f.good >= max(1, f.limit/4) {
			f.limit++
			f.good = 0
		}
	}
	wake := f.inFlight < f.limit
	f.mu.Unlock()
	if wake {
		f.signal()
	}
}

func (f *flight) signal() {
	select {
	case f.free <- struct{}{}:
	default:
	}
}

// bound is the current limit, for metrics.
func (f *flight) bound() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.limit
}
