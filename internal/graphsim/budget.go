package graphsim

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// Shape is how a Budget counts Graph calls.
type Shape int

// The shapes a Budget can take. The zero Shape means no budget.
const (
	// TokenBucket refills Rate calls a second up to Burst; an admitted call
	// takes one token. A throttled call takes none: a client that honours
	// the Retry-After it was given is admitted then, however often it was
	// refused before.
	TokenBucket Shape = iota + 1
	// FixedWindow admits Limit calls per Window, the windows aligned from
	// the budget's start (New, or the last RestartBudget). Every call that
	// reaches the budget counts, throttled ones included, as SharePoint
	// counts them.
	FixedWindow
	// SlidingWindow admits a call while fewer than Limit calls arrived in
	// the trailing Window. Every call counts, throttled ones included, so a
	// client that keeps calling while throttled stays throttled.
	SlidingWindow
)

func (s Shape) String() string {
	switch s {
	case 0:
		return "none"
	case TokenBucket:
		return "token bucket"
	case FixedWindow:
		return "fixed window"
	case SlidingWindow:
		return "sliding window"
	}
	return fmt.Sprintf("Shape(%d)", int(s))
}

// RetryAfterStyle is how a throttled answer states its wait.
type RetryAfterStyle int

// The Retry-After styles.
const (
	// RetryAfterFractional sends the wait in seconds rounded up to the
	// millisecond ("0.02"), as RateLimit does.
	RetryAfterFractional RetryAfterStyle = iota
	// RetryAfterWholeSeconds rounds the wait up to whole seconds, at least
	// 1 ("1"), as Graph's current samples show.
	RetryAfterWholeSeconds
	// RetryAfterAbsent sends no Retry-After at all, as some tenants' 429s
	// and some 503s do; such an answer announces no deadline.
	RetryAfterAbsent
)

// Budget is one app-wide Graph budget: every Graph call that gets past
// the route, token and body checks and the counted faults (Throttle,
// Unavailable) draws on it, and one it refuses is answered Status with a
// Graph error body. The window shapes also send RateLimit-Limit,
// RateLimit-Remaining and RateLimit-Reset on every answer, success or
// not, once at least 80% of the window's Limit is used, this call
// included (see rateLimitHeaders). The zero Budget is none.
type Budget struct {
	Shape Shape
	// Rate is the token bucket's refill in calls per second.
	Rate float64
	// Burst is the token bucket's size, at least 1 (default 1). It starts
	// full.
	Burst int
	// Limit is how many calls a window admits.
	Limit int
	// Window is the windows' length.
	Window time.Duration
	// RetryAfter is how refusals state their wait.
	RetryAfter RetryAfterStyle
	// Status answers refused calls: 429 (default) or 503.
	Status int
	// CallCost is the resource units one call costs in the RateLimit
	// headers, which SharePoint states in units, not calls: default 2, a
	// write's cost.
	CallCost int
}

// headersFrom is the share of a window's Limit used from which answers
// carry RateLimit headers.
const headersFrom = 0.8

// validate says what is wrong with a Budget New was given.
func (b Budget) validate() error {
	switch b.Shape {
	case 0:
		return nil
	case TokenBucket:
		if !(b.Rate > 0) || math.IsInf(b.Rate, 1) {
			return fmt.Errorf("token bucket rate %v: must be a positive number", b.Rate)
		}
		if b.Burst < 0 {
			return fmt.Errorf("token bucket burst %d: must not be negative", b.Burst)
		}
	case FixedWindow, SlidingWindow:
		if b.Limit <= 0 {
			return fmt.Errorf("%s limit %d: must be positive", b.Shape, b.Limit)
		}
		if b.Window <= 0 {
			return fmt.Errorf("%s window %s: must be positive", b.Shape, b.Window)
		}
	default:
		return fmt.Errorf("shape %s: %w", b.Shape, errors.ErrUnsupported)
	}
	switch b.RetryAfter {
	case RetryAfterFractional, RetryAfterWholeSeconds, RetryAfterAbsent:
	default:
		return fmt.Errorf("retry-after style %d: %w", b.RetryAfter, errors.ErrUnsupported)
	}
	if b.CallCost < 0 {
		return fmt.Errorf("call cost %d: must not be negative", b.CallCost)
	}
	switch b.Status {
	case 0, http.StatusTooManyRequests, http.StatusServiceUnavailable:
	default:
		return fmt.Errorf("status %d: must be 429 or 503", b.Status)
	}
	return nil
}

// budgetState is a Budget's count of calls. Guarded by Server.mu.
type budgetState struct {
	b     Budget
	start time.Time // the windows are aligned from here

	tokens float64   // token bucket: tokens left at last
	last   time.Time // token bucket: when tokens was computed

	window int64 // fixed window: index of the current window
	used   int   // fixed window: calls counted in it

	// times are the arrivals counted in the sliding window, oldest first,
	// from head on; they never hold more than the calls of one Window.
	times []time.Time
	head  int
}

func newBudgetState(b Budget, now time.Time) *budgetState {
	if b.Shape == TokenBucket && b.Burst <= 0 {
		b.Burst = 1
	}
	return &budgetState{b: b, start: now, tokens: float64(b.Burst), last: now}
}

// verdict is what the budget made of one call.
type verdict struct {
	admitted bool
	// wait is how long until a call would be admitted, if no other came
	// meanwhile; set only for a refusal.
	wait time.Duration
	// headers says the answer carries RateLimit headers with limit,
	// remaining and reset.
	headers          bool
	limit, remaining int
	reset            time.Duration
}

// spend counts one call arriving at now and decides it.
func (st *budgetState) spend(now time.Time) verdict {
	switch st.b.Shape {
	case TokenBucket:
		return st.spendToken(now)
	case FixedWindow:
		return st.spendFixed(now)
	default:
		return st.spendSliding(now)
	}
}

// tokenSlack absorbs float rounding, so that a client waiting exactly the
// announced time finds its token.
const tokenSlack = 1e-9

func (st *budgetState) spendToken(now time.Time) verdict {
	if now.After(st.last) {
		st.tokens = min(float64(st.b.Burst), st.tokens+now.Sub(st.last).Seconds()*st.b.Rate)
		st.last = now
	}
	if st.tokens >= 1-tokenSlack {
		st.tokens = max(st.tokens-1, 0)
		return verdict{admitted: true}
	}
	secs := (1 - st.tokens) / st.b.Rate
	return verdict{wait: time.Duration(math.Ceil(secs * float64(time.Second)))}
}

func (st *budgetState) spendFixed(now time.Time) verdict {
	w := st.b.Window
	k := int64(max(now.Sub(st.start), 0) / w)
	if k != st.window {
		st.window, st.used = k, 0
	}
	st.used++
	end := st.start.Add(time.Duration(k+1) * w)
	v := st.counted(st.used, end.Sub(now))
	if !v.admitted {
		v.wait = end.Sub(now)
	}
	return v
}

func (st *budgetState) spendSliding(now time.Time) verdict {
	w := st.b.Window
	for st.head < len(st.times) && !st.times[st.head].After(now.Add(-w)) {
		st.head++
	}
	if st.head > 1024 && st.head > len(st.times)/2 {
		st.times = append(st.times[:0], st.times[st.head:]...)
		st.head = 0
	}
	st.times = append(st.times, now)
	live := st.times[st.head:]
	v := st.counted(len(live), live[0].Add(w).Sub(now))
	if !v.admitted {
		// Admitted again once all but Limit-1 of the counted calls left:
		// when the (len-Limit)-th oldest, this call included, leaves.
		v.wait = live[len(live)-st.b.Limit].Add(w).Sub(now)
	}
	return v
}

// counted is the verdict for a window holding used calls, this one
// included, that resets (or, sliding, loses its oldest call) after reset.
func (st *budgetState) counted(used int, reset time.Duration) verdict {
	n := st.b.Limit
	return verdict{
		admitted:  used <= n,
		headers:   float64(used) >= headersFrom*float64(n),
		limit:     n,
		remaining: max(n-used, 0),
		reset:     reset,
	}
}

// spendBudgetLocked draws one call arriving at now from the budget. A
// refusal comes back as a reply; an admitted call gets the headers its
// answer must carry, if any.
func (s *Server) spendBudgetLocked(now time.Time) (refused *reply, header http.Header) {
	if s.budget == nil {
		return nil, nil
	}
	v := s.budget.spend(now)
	if v.headers {
		header = rateLimitHeaders(v, s.budget.b.CallCost)
	}
	if v.admitted {
		return nil, header
	}
	b := s.budget.b
	rep := &reply{err: throttledError(), header: header, throttled: true}
	if b.Status == http.StatusServiceUnavailable {
		rep.err = unavailableError(http.StatusServiceUnavailable)
	}
	switch b.RetryAfter {
	case RetryAfterWholeSeconds:
		secs := wholeSeconds(v.wait)
		rep.retryAfter, rep.wait, rep.announce = strconv.FormatInt(secs, 10), time.Duration(secs)*time.Second, true
	case RetryAfterFractional:
		rep.wait = ceilMillis(v.wait)
		rep.retryAfter, rep.announce = formatSeconds(rep.wait), true
	}
	return rep, nil
}

// rateLimitHeaders renders a verdict's RateLimit-Limit, -Remaining (in
// resource units, cost a call) and -Reset (IETF draft-03, as SharePoint
// sends them): Reset is whole seconds
// rounded up, at least 1, until the fixed window ends or, for a sliding
// window, until its oldest counted call leaves it.
func rateLimitHeaders(v verdict, cost int) http.Header {
	if cost == 0 {
		cost = 2
	}
	return http.Header{
		"Ratelimit-Limit":     {strconv.Itoa(v.limit * cost)},
		"Ratelimit-Remaining": {strconv.Itoa(v.remaining * cost)},
		"Ratelimit-Reset":     {strconv.FormatInt(wholeSeconds(v.reset), 10)},
	}
}

// wholeSeconds rounds d up to whole seconds, at least 1.
func wholeSeconds(d time.Duration) int64 {
	return max(int64(math.Ceil(d.Seconds())), 1)
}

// withHeader adds h to rep's headers.
func withHeader(rep *reply, h http.Header) *reply {
	if rep == nil || len(h) == 0 {
		return rep
	}
	if rep.header == nil {
		rep.header = h
		return rep
	}
	for k, v := range h {
		rep.header[k] = v
	}
	return rep
}

// RestartBudget starts the budget afresh at this moment: a full bucket,
// empty windows aligned from now. Benchmarks call it just before the
// consumer under test starts, so that its first window is a whole one.
// Without a budget it does nothing.
func (s *Server) RestartBudget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.budget != nil {
		s.budget = newBudgetState(s.budget.b, time.Now())
	}
}

// BudgetStart is when the budget's windows are aligned from: New, or the
// last RestartBudget. It is zero without a budget.
func (s *Server) BudgetStart() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.budget == nil {
		return time.Time{}
	}
	return s.budget.start
}
