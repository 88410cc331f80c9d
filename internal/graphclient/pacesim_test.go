package graphclient

import (
	"container/heap"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// The pacer's tests run the real admission (gate, concurrency bound,
// pacer) against budget shapes in simulated time: calls take latency,
// workers keep the bound's worth of calls in flight, and the shapes answer
// as Graph's throttling does. A run of minutes takes milliseconds, and the
// figures are exact, so the targets are the bench's own.

// shape answers one call sent at at, like an app-wide Graph budget.
type shape interface {
	call(at time.Time) (status int, h http.Header)
	// budget is the calls the shape would admit from start to end.
	budget(start, end time.Time) float64
}

// raStyle is how a shape words its Retry-After.
type raStyle int

const (
	raWhole raStyle = iota // seconds, rounded up
	raFraction
	raAbsent
)

func retryAfterHeader(h http.Header, style raStyle, d time.Duration) {
	switch style {
	case raWhole:
		h.Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(d.Seconds())))))
	case raFraction:
		h.Set("Retry-After", strconv.FormatFloat(d.Seconds(), 'f', 3, 64))
	}
}

// bucket is a token bucket: rate calls/s, burst deep; a throttled call
// takes nothing.
type bucket struct {
	rate, burst float64
	style       raStyle
	status      int
	tokens      float64
	at          time.Time
}

func (b *bucket) call(at time.Time) (int, http.Header) {
	if b.at.IsZero() {
		b.tokens, b.at = b.burst, at
	}
	b.tokens = min(b.burst, b.tokens+at.Sub(b.at).Seconds()*b.rate)
	b.at = at
	if b.tokens >= 1 {
		b.tokens--
		return http.StatusOK, http.Header{}
	}
	h := http.Header{}
	retryAfterHeader(h, b.style, time.Duration((1-b.tokens)/b.rate*float64(time.Second)))
	return b.status, h
}

func (b *bucket) budget(start, end time.Time) float64 {
	return b.burst + end.Sub(start).Seconds()*b.rate
}

// window is a per-window budget of limit calls (each costing cost
// resource units in the headers), fixed or sliding; throttled calls count.
// Past 80% every answer carries the RateLimit headers.
type window struct {
	limit   int
	span    time.Duration
	sliding bool
	cost    int
	start   time.Time
	calls   []time.Time // counted calls in the current (or trailing) window
}

func (w *window) call(at time.Time) (int, http.Header) {
	if w.start.IsZero() {
		w.start = at
	}
	if w.sliding {
		i := 0
		for i < len(w.calls) && !w.calls[i].After(at.Add(-w.span)) {
			i++
		}
		w.calls = w.calls[i:]
	} else if at.Sub(w.start) >= w.span {
		w.start = w.start.Add(at.Sub(w.start).Truncate(w.span))
		w.calls = w.calls[:0]
	}
	over := len(w.calls) >= w.limit
	w.calls = append(w.calls, at)
	h := http.Header{}
	var reset time.Duration
	if w.sliding {
		reset = w.calls[0].Add(w.span).Sub(at)
	} else {
		reset = w.start.Add(w.span).Sub(at)
	}
	resetSecs := max(1, int(math.Ceil(reset.Seconds())))
	if used := len(w.calls); used*5 >= w.limit*4 {
		h.Set("RateLimit-Limit", strconv.Itoa(w.limit*w.cost))
		h.Set("RateLimit-Remaining", strconv.Itoa(max(0, w.limit-used)*w.cost))
		h.Set("RateLimit-Reset", strconv.Itoa(resetSecs))
	}
	if over {
		h.Set("Retry-After", strconv.Itoa(resetSecs))
		return http.StatusTooManyRequests, h
	}
	return http.StatusOK, h
}

func (w *window) budget(start, end time.Time) float64 {
	return float64(w.limit) * end.Sub(start).Seconds() / w.span.Seconds()
}

// simResult is what a simulated run measured.
type simResult struct {
	sent, throttled, early int
	used                   float64 // admitted calls over the shape's budget
	// firstTenth is, per completed window, the share of its admitted calls
	// in its first tenth (window shapes).
	firstTenth []float64
}

type simEvent struct {
	at     time.Time
	worker int
	kind   int // 0 ready, 1 send, 2 answer, 3 throttle signal from replica worker, 4 heartbeat of replica worker
	status int
	header http.Header
	t      *ticket
	pause  time.Duration
	rate   float64
}

type simQueue []simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	if q[i].at.Equal(q[j].at) {
		return q[i].worker < q[j].worker
	}
	return q[i].at.Before(q[j].at)
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

var debugSim = false

// throttleAnswer is how long a throttled call takes to be answered.
const throttleAnswer = 5 * time.Millisecond

// signalDelay is how long a throttle signal takes to reach other replicas
// (core NATS on a LAN: well under a millisecond; a generous guess).
const signalDelay = time.Millisecond

// simulate runs workers calling through a fresh admission against s for
// d, each answer taking latency. With replicas > 1, the workers are spread
// over that many admissions sharing the budget as internal/budget has
// them do: a heartbeat each second sets each one's share and what the
// others admit, and a throttle signal reaches the others a moment later.
func simulate(s shape, pacing Pacing, workers int, latency, d time.Duration, span time.Duration, replicas int) simResult {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }
	q := &simQueue{}
	replicas = max(replicas, 1)
	all := make([]*admission, replicas)
	for i := range all {
		all[i] = newAdmission(admissionConfig{now: clock, maxRetryAfter: DefaultMaxRetryAfter, maxConcurrency: workers / replicas, pacing: pacing})
		if replicas > 1 {
			all[i].throttled = func(pause time.Duration, rate float64) {
				heap.Push(q, simEvent{at: now.Add(signalDelay), worker: i, kind: 3, pause: pause, rate: rate})
			}
		}
		heap.Push(q, simEvent{at: t0, worker: i, kind: 4})
	}
	for w := range workers {
		heap.Push(q, simEvent{at: t0, worker: w})
	}
	var res simResult
	var announced time.Time // end of the latest Retry-After the shape gave
	var parked []int
	admitted := map[int][2]int{} // window index → calls in its first tenth, all calls
	end := t0.Add(d)
	for q.Len() > 0 {
		e := heap.Pop(q).(simEvent)
		if e.at.After(end) {
			break
		}
		now = e.at
		a := all[e.worker%replicas]
		switch e.kind {
		case 3:
			for i, o := range all {
				if i != e.worker {
					o.adopt(e.pause, e.rate)
				}
			}
			continue
		case 4:
			others := 0.0
			for i, o := range all {
				if i != e.worker {
					others += o.pacer.admitted(now)
				}
			}
			a.pacer.setShare(now, 1/float64(replicas), others)
			if debugSim && e.worker == 0 {
				fmt.Printf("t=%v rate=%.1f lim=%.1f phase=%d best=%.1f own=%.1f sent=%d thr=%d fl=%d\n", now.Sub(t0), a.pacer.rate, a.pacer.limit(), a.pacer.phase, a.pacer.best, a.pacer.admitted(now), res.sent, res.throttled, a.flight.limit)
			}
			heap.Push(q, simEvent{at: now.Add(time.Second), worker: e.worker, kind: 4})
			continue
		case 0:
			if g := a.gate.until(); g.After(now) {
				heap.Push(q, simEvent{at: g, worker: e.worker})
				continue
			}
			if a.flight.inFlight >= a.flight.limit {
				parked = append(parked, e.worker)
				continue
			}
			ok, d := a.pacer.reserve(now)
			if !ok {
				heap.Push(q, simEvent{at: now.Add(d), worker: e.worker})
				continue
			}
			a.flight.inFlight++
			t := &ticket{a: a}
			heap.Push(q, simEvent{at: now, worker: e.worker, kind: 1, t: t})
		case 1:
			if g := a.gate.until(); g.After(now) {
				e.t.done()
				heap.Push(q, simEvent{at: g, worker: e.worker})
				continue
			}
			res.sent++
			if now.Before(announced) {
				res.early++
			}
			status, h := s.call(now)
			if status == http.StatusOK {
				if span > 0 {
					i := int(now.Sub(t0) / span)
					c := admitted[i]
					if now.Sub(t0.Add(time.Duration(i)*span)) < span/10 {
						c[0]++
					}
					c[1]++
					admitted[i] = c
				}
			}
			answer := latency
			if status != http.StatusOK {
				// Graph refuses at once; the work is what takes time.
				res.throttled++
				answer = min(latency, throttleAnswer)
			}
			heap.Push(q, simEvent{at: now.Add(answer), worker: e.worker, kind: 2, status: status, header: h, t: e.t})
		case 2:
			if ra, ok := parseRetryAfter(e.header.Get("Retry-After"), now); ok && e.status != http.StatusOK && now.Add(ra).After(announced) {
				announced = now.Add(ra)
			}
			e.t.observe(now, &response{status: e.status, header: e.header})
			e.t.done()
			heap.Push(q, simEvent{at: now, worker: e.worker})
			kept := parked[:0]
			for _, w := range parked {
				if w%replicas == e.worker%replicas {
					heap.Push(q, simEvent{at: now, worker: w})
				} else {
					kept = append(kept, w)
				}
			}
			parked = kept
		}
	}
	res.used = float64(res.sent-res.throttled) / s.budget(t0, end)
	for i := range windows(d, span) {
		if c := admitted[i]; c[1] > 0 {
			res.firstTenth = append(res.firstTenth, float64(c[0])/float64(c[1]))
		}
	}
	return res
}

// paceTarget is what a simulated run must reach.
type paceTarget struct {
	used, throttled float64
	// firstTenth bounds each window's share of calls in its first tenth,
	// from window skip on (the first is the probe, unless the budget is
	// configured).
	firstTenth float64
	skip       int
}

type paceCase struct {
	name     string
	replicas int
	shape    func() shape
	pacing   Pacing
	latency  time.Duration
	run      time.Duration
	span     time.Duration
	want     paceTarget
}

func TestPacerConvergesOnEveryShape(t *testing.T) {
	t.Parallel()
	tokenTarget := paceTarget{used: 0.9, throttled: 0.02}
	windowTarget := paceTarget{used: 0.9, throttled: 0.01, firstTenth: 0.2, skip: 1}
	var tests []paceCase
	for _, r := range []float64{10, 50, 200} {
		for _, lat := range []time.Duration{50 * time.Millisecond, 300 * time.Millisecond} {
			tests = append(tests, paceCase{fmt.Sprintf("token bucket %v/s whole-second Retry-After %v", r, lat), 0,
				func() shape { return &bucket{rate: r, burst: r, style: raWhole, status: 429} }, Pacing{}, lat, 90 * time.Second, 0, tokenTarget})
		}
	}
	more := []paceCase{
		{"three replicas share token bucket 50/s", 3, func() shape { return &bucket{rate: 50, burst: 50, style: raWhole, status: 429} }, Pacing{}, 50 * time.Millisecond, 90 * time.Second, 0, tokenTarget},
		{"three replicas share fixed window 600/min", 3, func() shape { return &window{limit: 600, span: time.Minute, cost: 2} }, Pacing{}, 50 * time.Millisecond, 4 * time.Minute, time.Minute, windowTarget},
		{"token bucket 50/s fractional Retry-After", 0, func() shape { return &bucket{rate: 50, burst: 50, style: raFraction, status: 429} }, Pacing{}, 50 * time.Millisecond, 90 * time.Second, 0, tokenTarget},
		{"token bucket 50/s 429 without Retry-After", 0, func() shape { return &bucket{rate: 50, burst: 50, style: raAbsent, status: 429} }, Pacing{}, 50 * time.Millisecond, 90 * time.Second, 0, tokenTarget},
		{"token bucket 50/s 503 without Retry-After", 0, func() shape { return &bucket{rate: 50, burst: 50, style: raAbsent, status: 503} }, Pacing{}, 50 * time.Millisecond, 90 * time.Second, 0, tokenTarget},
		{"fixed window 600/min", 0, func() shape { return &window{limit: 600, span: time.Minute, cost: 2} }, Pacing{}, 50 * time.Millisecond, 4 * time.Minute, time.Minute, windowTarget},
		{"fixed window 3000/min", 0, func() shape { return &window{limit: 3000, span: time.Minute, cost: 2} }, Pacing{}, 50 * time.Millisecond, 4 * time.Minute, time.Minute, windowTarget},
		{"fixed window 600/min 300ms", 0, func() shape { return &window{limit: 600, span: time.Minute, cost: 2} }, Pacing{}, 300 * time.Millisecond, 4 * time.Minute, time.Minute, windowTarget},
		{"sliding window 600/min", 0, func() shape { return &window{limit: 600, span: time.Minute, sliding: true, cost: 2} }, Pacing{}, 50 * time.Millisecond, 4 * time.Minute, time.Minute, windowTarget},
		{"sliding window 3000/min", 0, func() shape { return &window{limit: 3000, span: time.Minute, sliding: true, cost: 2} }, Pacing{}, 50 * time.Millisecond, 4 * time.Minute, time.Minute, windowTarget},
		{"fixed window 600/min, budget known", 0, func() shape { return &window{limit: 600, span: time.Minute, cost: 2} }, Pacing{Budget: 1200}, 50 * time.Millisecond, 4 * time.Minute, time.Minute,
			paceTarget{used: 0.9, throttled: 0.01, firstTenth: 0.2}},
	}
	tests = append(tests, more...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := simulate(tt.shape(), tt.pacing, 64*max(tt.replicas, 1), tt.latency, tt.run, tt.span, tt.replicas)
			share := float64(got.throttled) / float64(max(got.sent, 1))
			t.Logf("%s: budget used %.3f, throttled %.2f%% of %d, early %d, first tenth %.2f", tt.name, got.used, 100*share, got.sent, got.early, got.firstTenth)
			if got.used < tt.want.used {
				t.Errorf("budget used %.3f, want ≥ %.2f", got.used, tt.want.used)
			}
			if share > tt.want.throttled {
				t.Errorf("throttled %.2f%% of calls, want ≤ %.0f%%", 100*share, 100*tt.want.throttled)
			}
			// Another replica hears of a pause a moment after Graph gave it,
			// and may send within that moment.
			if early := got.early; (tt.replicas <= 1 && early != 0) || float64(early) > 0.001*float64(got.sent) {
				t.Errorf("%d calls before Retry-After, want 0 (one replica) or ≤ 0.1%% (several)", early)
			}
			for i, f := range got.firstTenth {
				if i >= tt.want.skip && tt.want.firstTenth > 0 && f > tt.want.firstTenth {
					t.Errorf("window %d: %.0f%% of its calls in its first tenth, want ≤ %.0f%%", i, 100*f, 100*tt.want.firstTenth)
				}
			}
		})
	}
}

// windows is how many whole windows of span fit in d; 0 without windows.
func windows(d, span time.Duration) int {
	if span <= 0 {
		return 0
	}
	return int(d / span)
}

// outage answers 503 without Retry-After from from to to after its first
// call, and is inner otherwise; its budget leaves the outage out.
type outage struct {
	inner    shape
	from, to time.Duration
	start    time.Time
}

func (o *outage) call(at time.Time) (int, http.Header) {
	if o.start.IsZero() {
		o.start = at
	}
	if since := at.Sub(o.start); since >= o.from && since < o.to {
		return http.StatusServiceUnavailable, http.Header{}
	}
	return o.inner.call(at)
}

func (o *outage) budget(start, end time.Time) float64 {
	return o.inner.budget(start, end) - o.inner.budget(start, start.Add(o.to-o.from)) + o.inner.budget(start, start)
}

func TestPacerRecoversInSecondsAfterAnOutage(t *testing.T) {
	t.Parallel()
	// A 30 s outage in a 120 s run: the run reaches 0.85 of the budget
	// outside the outage only if the pace is back within a few seconds.
	s := &outage{inner: &bucket{rate: 50, burst: 50, style: raWhole, status: 429}, from: 30 * time.Second, to: 60 * time.Second}
	got := simulate(s, Pacing{}, 64, 50*time.Millisecond, 2*time.Minute, 0, 1)
	if got.used < 0.85 {
		t.Errorf("budget used outside the outage %.3f, want ≥ 0.85", got.used)
	}
}
