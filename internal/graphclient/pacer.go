package graphclient

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// pacer spreads calls so the app runs just under the rate Graph grants it,
// instead of bouncing off the limit. SharePoint throttles per app and counts
// throttled requests against the budget too, so every 429 costs twice.
//
// It starts unlimited. Each throttle (at most one per cooldown, since one
// burst of 429s is one signal) sets the rate to a little under what Graph
// admitted recently; between throttles the rate creeps up, so a budget that
// grows is found again. This is additive-increase/multiplicative-decrease
// anchored on the measured admitted rate, which converges in a few seconds
// and then throttles rarely.
type pacer struct {
	mu  sync.Mutex
	lim *rate.Limiter
	// admitted counts admitted calls per paceBucket over the last
	// paceWindow, as a ring: constant memory and work per call however
	// fast calls go. bucketAt is the start of the newest bucket, at index
	// newest.
	admitted [paceWindow / paceBucket]int
	newest   int
	bucketAt time.Time
	first    time.Time // first admitted call ever
	lastCut  time.Time
	lastRise time.Time
}

const (
	paceWindow   = 5 * time.Second
	paceBucket   = 100 * time.Millisecond
	paceMinAge   = time.Second // shortest history a rate is measured over
	paceCooldown = 500 * time.Millisecond
	paceBackoff  = 0.95 // fraction of the admitted rate to run at after a throttle
	paceRise     = 1.02 // growth per second without throttling
	paceFloor    = 0.2  // calls per second, so a long outage cannot stall it to nothing
)

func newPacer() *pacer {
	return &pacer{lim: rate.NewLimiter(rate.Inf, 1)}
}

// wait blocks until the pace allows another call.
func (p *pacer) wait(ctx context.Context) error {
	if err := p.lim.Wait(ctx); err != nil {
		return fmt.Errorf("pace: %w", err)
	}
	return nil
}

// limit is the current pace in calls per second; +Inf when unlimited.
func (p *pacer) limit() float64 { return float64(p.lim.Limit()) }

// admit records a call Graph did not throttle.
func (p *pacer) admit(at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.first.IsZero() {
		p.first = at
	}
	p.advance(at)
	p.admitted[p.newest]++
	if p.lim.Limit() == rate.Inf {
		return
	}
	if at.Sub(p.lastRise) >= time.Second && at.Sub(p.lastCut) >= time.Second {
		p.lim.SetLimitAt(at, p.lim.Limit()*paceRise)
		p.lastRise = at
	}
}

// throttle records a 429 and slows the pace to just under the rate Graph
// has been admitting. With less than paceMinAge of history that rate is
// noise (a first burst of calls all answered at once), so the pace then
// falls back on the Retry-After: one call per announced wait, which for a
// token bucket is its refill rate, and for long waits is cautious until
// measurement takes over.
func (p *pacer) throttle(at time.Time, retryAfter time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.lastCut.IsZero() && at.Sub(p.lastCut) < paceCooldown {
		return
	}
	p.advance(at)
	var measured float64
	if !p.first.IsZero() && at.Sub(p.first) >= paceMinAge {
		n := 0
		for _, c := range p.admitted {
			n += c
		}
		measured = float64(n) / min(paceWindow, at.Sub(p.first)).Seconds() * paceBackoff
	}
	if measured == 0 && retryAfter > 0 {
		measured = 1 / retryAfter.Seconds()
	}
	next := rate.Limit(max(measured, paceFloor))
	if next < p.lim.Limit() {
		p.lim.SetLimitAt(at, next)
	}
	p.lastCut, p.lastRise = at, at
}

// advance moves the ring to the bucket holding now, emptying the buckets
// it passes over.
func (p *pacer) advance(now time.Time) {
	if p.bucketAt.IsZero() {
		p.bucketAt = now.Truncate(paceBucket)
		return
	}
	steps := int(now.Sub(p.bucketAt) / paceBucket)
	for i := range min(steps, len(p.admitted)) {
		p.admitted[(p.newest+1+i)%len(p.admitted)] = 0
	}
	if steps > 0 {
		p.newest = (p.newest + steps) % len(p.admitted)
		p.bucketAt = p.bucketAt.Add(time.Duration(steps) * paceBucket)
	}
}
