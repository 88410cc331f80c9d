package graphclient

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"
)

// Pacing is what the pacer knows before Graph says anything. Zero values
// probe: the pacer starts slowly and finds the budget itself.
type Pacing struct {
	// MaxRate caps the app's calls per second from this replica's side
	// (SITEFOLLOW_GRAPH_MAX_RPS), for tenants that keep part of the budget
	// for other apps. 0 means no cap.
	MaxRate float64
	// Budget is the app's known budget in resource units per Window
	// (SITEFOLLOW_GRAPH_BUDGET); 0 means unknown, found by probing.
	Budget float64
	// Window is the budget's window; default a minute, SharePoint's.
	Window time.Duration
	// CallCost is the resource units one call costs; default 2 (a write).
	CallCost float64
}

// pacer spreads the app's Graph calls so that, together, they run just
// under the budget Graph grants the app instead of bouncing off it.
// SharePoint counts throttled calls against the budget too, so each 429
// costs twice, and with whole-second Retry-After each one also costs a
// pause.
//
// It works in app-wide calls per second (rate) and runs at its share of
// that (1/N of N replicas, see setShare). It knows the budget in one of
// three ways, best first:
//   - quota: RateLimit headers (or a configured Budget) give the window's
//     limit and what remains; it spreads what remains over what is left of
//     the window, never faster than the limit's sustained rate;
//   - measured: after a throttle it runs a little under the rate Graph was
//     admitting, then probes upward, slowly at first and faster the longer
//     nothing is throttled, so a budget that grew is found again;
//   - nothing yet: slow start, doubling every slowStartStep from startRate,
//     so the first burst does not meet a small budget with every
//     concurrent call at once. Without any throttle it is unlimited within
//     a few seconds.
//
// A throttle while most calls fail, or nothing is admitted at all, is an
// outage rather than a budget: the rate is left as it was, so recovery is
// immediate; a cut far below the best rate measured grows back to it
// exponentially. No cut goes below a quarter of the decaying peak, so
// throttles that come whatever the rate cannot ratchet the pace to nothing.
// The Retry-After never sets the rate: whole-second values say nothing
// about it.
type pacer struct {
	mu  sync.Mutex
	cfg Pacing
	lim *rate.Limiter
	// head lets one waiter at a time ask the limiter, the others queued
	// behind it in arrival order: waiters asking in parallel would all
	// wake at each turn, one take it and the rest sleep again, k wakeups
	// per call with k waiting (64 batches at 50 calls/s: 3,200 a second).
	head  *semaphore.Weighted
	phase pacePhase
	// rate is the app-wide calls per second; +Inf when unlimited.
	rate float64
	// best is the highest sustainable rate measured, the target of a
	// recovery; 0 unknown.
	best float64
	// rough says the rate was cut in slow start, where what Graph admitted
	// lags what was sent by the answers' latency: it is probably low, so
	// it rises at the steepest step until the next throttle.
	rough bool
	// peak is the most calls per second the app was admitted (a ring's
	// mean, this replica's scaled by its share), halving every
	// peakHalfLife; no cut goes below a quarter of it, so throttles that
	// come whatever the rate (another app spending the tenant's budget, a
	// flaky front end) cannot ratchet the pace down to nothing, while a
	// budget that really shrank is followed as the peak decays.
	peak   float64
	peakAt time.Time
	// admittedSince and throttledSince count answers since the last cut:
	// a budget overrun throttles the excess, an outage nearly everything.
	admittedSince, throttledSince int
	// sustained is the quota's limit per second (limit / cost / window).
	sustained float64
	// spread is the rate that spends what the quota has left over what is
	// left of its window, until spreadUntil (the window's reset); +Inf when
	// unknown.
	spread      float64
	spreadUntil time.Time
	// penalty scales the quota rate down after a throttle despite it, and
	// heals back to 1.
	penalty  float64
	window   time.Duration
	share    float64 // this replica's part of the app's budget
	peers    float64 // the other replicas' admitted calls per second
	lastCut  time.Time
	lastStep time.Time
	cooldown time.Duration
	ring     admittedRing
}

type pacePhase int

const (
	phaseSlowStart pacePhase = iota
	phaseProbe
	phaseQuota
)

// Pacing constants. The shapes they were tuned against (token buckets of 10
// to 200 calls/s with whole-second Retry-After, fixed and sliding
// per-minute windows) are the bench's budget scenarios.
const (
	startRate     = 4.0                    // calls/s at the start of slow start
	slowStartStep = 500 * time.Millisecond // doubling period
	unlimitedRate = 4096.0                 // beyond this, pacing is off
	paceFloor     = 0.2                    // calls/s, so an outage cannot stall it to nothing
	paceBackoff   = 0.97                   // fraction of the measured rate after a throttle
	quotaHeadroom = 0.97                   // fraction of the quota's rate run at
	probeStep     = 0.005                  // first rise per second, as a fraction of the rate
	roughStep     = 0.05                   // rise per second after a rough cut
	probeMaxStep  = 0.10                   // steepest rise per second
	probeFullRate = 50.0                   // calls/s from which the first rise is probeStep
	probeDoubling = 6 * time.Second        // the rise doubles after this long without a throttle
	recoverBelow  = 0.5                    // under this fraction of best, grow exponentially
	recoverTo     = 0.9                    // ... up to this fraction of best
	minCooldown   = time.Second            // one burst of 429s is one signal
	burstSpan     = 500 * time.Millisecond // calls saved up while idle or paused
	waitSlice     = 100 * time.Millisecond // longest wait before asking again
	peakHalfLife  = 2 * time.Minute
	defaultWindow = time.Minute
	defaultCost   = 2.0
)

func newPacer(cfg Pacing, now time.Time) *pacer {
	p := &pacer{cfg: cfg, share: 1, penalty: 1, spread: math.Inf(1), lastStep: now, window: cfg.Window,
		head: semaphore.NewWeighted(1)}
	if p.window <= 0 {
		p.window = defaultWindow
	}
	if p.cfg.CallCost <= 0 {
		p.cfg.CallCost = defaultCost
	}
	p.lim = rate.NewLimiter(rate.Inf, 1)
	if cfg.Budget > 0 {
		p.sustained = cfg.Budget / p.cfg.CallCost / p.window.Seconds()
		p.best = p.sustained
		p.phase = phaseQuota
		p.rate = p.sustained * quotaHeadroom
	} else {
		p.phase = phaseSlowStart
		p.rate = startRate
	}
	p.apply(now)
	return p
}

// wait blocks until the pace allows another call, waiters served in
// arrival order.
func (p *pacer) wait(ctx context.Context, now func() time.Time) error {
	if !p.head.TryAcquire(1) {
		if err := p.head.Acquire(ctx, 1); err != nil {
			return fmt.Errorf("pace: %w", err)
		}
	}
	defer p.head.Release(1)
	for {
		ok, d := p.reserve(now())
		if ok {
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("pace: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// reserve takes a turn at at if one is free; otherwise it says how long to
// wait before asking again, at most waitSlice. Turns are never booked
// ahead: the rate can rise meanwhile (a throttle's cut heals, a window
// resets, a peer leaves), and a call booked at a low rate would wait at
// it; and cancelled bookings would leave the limiter in debt.
func (p *pacer) reserve(at time.Time) (bool, time.Duration) {
	p.mu.Lock()
	if p.phase == phaseSlowStart && at.Sub(p.lastStep) >= slowStartStep {
		// Slow start grows with time while calls want to go, not only
		// with answers: a slow Graph must not hold the start at a crawl.
		p.grow(at)
		p.apply(at)
	}
	p.mu.Unlock()
	if p.lim.AllowN(at, 1) {
		return true, 0
	}
	limit := float64(p.lim.Limit())
	if limit <= 0 {
		return false, waitSlice
	}
	d := time.Duration((1 - p.lim.TokensAt(at)) / limit * float64(time.Second))
	return false, min(max(d, time.Millisecond), waitSlice)
}

// limit is this replica's pace in calls per second; +Inf when unlimited.
func (p *pacer) limit() float64 { return float64(p.lim.Limit()) }

// admit records a call Graph did not throttle, with the answer's quota.
func (p *pacer) admit(at time.Time, q quota) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ring.add(at)
	p.admittedSince++
	if at.Sub(p.peakAt) >= time.Second {
		if m, ok := p.ring.mean(at); ok {
			p.peak = max(p.peakNow(at), m/p.share)
			p.peakAt = at
		}
	}
	if q.ok {
		p.learnQuota(at, q)
	}
	p.grow(at)
	p.apply(at)
}

// throttle records a 429 (or 503, 509): the app is over its budget. It
// returns the app-wide rate it cut to, for other replicas, or 0 when this
// signal fell within the cooldown of an earlier one.
func (p *pacer) throttle(at time.Time, q quota) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if q.ok {
		p.learnQuota(at, q)
	}
	p.throttledSince++
	if !p.lastCut.IsZero() && at.Sub(p.lastCut) < p.cooldown {
		return 0
	}
	p.ring.advance(at) // a throttle starts the history too
	outage := p.best > 0 && p.throttledSince > p.admittedSince
	p.admittedSince, p.throttledSince = 0, 0
	p.lastCut, p.lastStep = at, at
	p.cooldown = minCooldown
	if p.phase == phaseQuota {
		p.penalty = max(p.penalty*0.9, 0.5)
		p.apply(at)
		return p.rate
	}
	if outage || p.ring.silent(at) {
		// Most calls since the last cut failed, or nothing was admitted
		// for the whole span: Graph is down, not the budget spent (that
		// would admit at its rate and throttle the excess). The gate's
		// pause and each call's backoff space the calls; cutting the rate
		// would only slow the recovery.
		return max(p.rate, paceFloor)
	}
	measured, ok := p.ring.mean(at)
	// The app's rate: this replica's and the busy peers' as of their last
	// heartbeat, or this one's scaled by its share when that is more (the
	// heartbeats lag while rates change fast, as in slow start).
	measured = max(measured+p.peers, measured/p.share)
	c := p.rate
	switch {
	case ok && !math.IsInf(c, 1):
		c = min(c, measured)
	case ok:
		c = measured
	case p.best == 0:
		// Nothing measured yet, ever: start slowly again rather than guess.
		p.rate, p.phase, p.lastStep = startRate, phaseSlowStart, at
		p.apply(at)
		return p.rate
	default:
		c = min(c, p.best) / 2
	}
	if ok {
		p.best = c
	}
	p.rough = p.phase == phaseSlowStart
	p.cut(at, c*paceBackoff)
	return p.rate
}

// cut sets the app-wide rate to r after a throttle, here or elsewhere. A
// cut without a measurement leaves best alone, so that the rate grows back
// to it quickly once calls pass again.
func (p *pacer) cut(at time.Time, r float64) {
	r = max(r, paceFloor, p.peakNow(at)/4)
	p.rate = r
	p.phase = phaseProbe
	p.apply(at)
}

// peakNow is peak decayed to at.
func (p *pacer) peakNow(at time.Time) float64 {
	if p.peakAt.IsZero() {
		return 0
	}
	return p.peak * math.Exp2(-at.Sub(p.peakAt).Seconds()/peakHalfLife.Seconds())
}

// adopt takes another replica's cut: the app-wide rate it measured.
func (p *pacer) adopt(at time.Time, r float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.phase == phaseQuota || r <= 0 || (!math.IsInf(p.rate, 1) && r >= p.rate) {
		return
	}
	p.lastCut, p.lastStep = at, at
	p.best = r / paceBackoff
	p.cut(at, r)
}

// paused tells the pacer the gate closed until until, so that the
// cooldown outlasts the pause: the calls in flight when it began answer
// within it, and are the same signal.
func (p *pacer) paused(at, until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d := until.Sub(at) + minCooldown; d > p.cooldown && at.Sub(p.lastCut) < minCooldown {
		// The calls let out together when the pause ends can meet a
		// bucket that has not refilled past them: the same episode.
		p.cooldown = d
	}
}

// setShare sets this replica's part of the app's budget and what the
// other replicas admit together, as the shared budget reports them.
func (p *pacer) setShare(at time.Time, share, peers float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.share = min(max(share, 0.01), 1)
	p.peers = max(peers, 0)
	p.apply(at)
}

// appRate is the app-wide rate and how it is known, for the shared budget
// and metrics.
func (p *pacer) appRate() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rate
}

// admitted is this replica's measured admitted calls per second.
func (p *pacer) admitted(at time.Time) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, _ := p.ring.mean(at)
	return r
}

// learnQuota takes the RateLimit headers: the window's sustained rate and
// the rate that spends what remains by the window's end.
func (p *pacer) learnQuota(at time.Time, q quota) {
	if q.reset > p.window {
		p.window = q.reset
	}
	cost := p.cfg.CallCost
	p.sustained = q.limit / cost / p.window.Seconds()
	reset := max(q.reset, time.Second)
	p.spread = q.remaining / cost / reset.Seconds()
	p.spreadUntil = at.Add(reset)
	p.best = max(p.best, p.sustained)
	p.phase = phaseQuota
}

// grow raises the rate while calls are admitted: doubling in slow start
// and in recovery, a slowly steepening rise while probing, and healing the
// penalty under a quota.
func (p *pacer) grow(at time.Time) {
	since := at.Sub(p.lastStep)
	switch p.phase {
	case phaseSlowStart:
		// Doubling by elapsed steps, not by answers: at a small share the
		// answers come too rarely to count on.
		steps := int(since / slowStartStep)
		if steps == 0 {
			return
		}
		p.lastStep = p.lastStep.Add(time.Duration(steps) * slowStartStep)
		p.rate *= math.Exp2(float64(min(steps, 16)))
		if p.rate > unlimitedRate {
			p.rate = math.Inf(1)
		}
	case phaseProbe:
		if math.IsInf(p.rate, 1) {
			return
		}
		if p.best > 0 && p.rate < p.best*recoverBelow {
			if steps := int(since / slowStartStep); steps > 0 {
				p.lastStep = p.lastStep.Add(time.Duration(steps) * slowStartStep)
				p.rate = min(p.rate*math.Exp2(float64(min(steps, 16))), p.best*recoverTo)
			}
			return
		}
		if since < time.Second {
			return
		}
		p.lastStep = at
		// Each crossing of the budget costs a throttle or two whatever the
		// rate, so at low rates the first rise is gentler: a crossing every
		// few seconds at 10 calls/s would throttle more than 1% of calls.
		step := probeStep * min(1, p.rate/probeFullRate) * math.Exp2(at.Sub(p.lastCut).Seconds()/probeDoubling.Seconds())
		if p.rough {
			step = roughStep
		}
		p.rate *= 1 + min(step, probeMaxStep)
		if p.rate > unlimitedRate {
			p.rate = math.Inf(1)
		}
	case phaseQuota:
		if since >= time.Second && p.penalty < 1 {
			p.lastStep = at
			p.penalty = min(p.penalty*1.02, 1)
		}
	}
}

// apply sets the limiter from the state: the phase's app-wide rate, this
// replica's share of it, and the cap.
func (p *pacer) apply(at time.Time) {
	if p.phase == phaseQuota {
		if !at.Before(p.spreadUntil) {
			// The window the headers spoke of is over, and the next one
			// has not reached 80% (or they would say so).
			p.spread = math.Inf(1)
		}
		p.rate = max(min(p.sustained, p.spread)*quotaHeadroom*p.penalty, paceFloor)
	}
	r := p.rate * p.share
	if p.cfg.MaxRate > 0 {
		r = min(r, p.cfg.MaxRate)
	}
	if math.IsInf(r, 1) {
		p.lim.SetLimitAt(at, rate.Inf)
		return
	}
	p.lim.SetBurstAt(at, max(1, int(math.Ceil(r*burstSpan.Seconds()))))
	p.lim.SetLimitAt(at, rate.Limit(r))
}
