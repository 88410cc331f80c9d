package graphclient

import (
	"context"
	"math"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

func TestPacerHonoursItsSettings(t *testing.T) {
	t.Parallel()
	unlimited := func() shape { return &bucket{rate: 1e6, burst: 1e6, style: raWhole, status: 429} }
	tests := []struct {
		name     string
		pacing   Pacing
		min, max float64 // calls per second
	}{
		{"cap holds with no throttling", Pacing{MaxRate: 20}, 19, 20.5},
		{"known budget starts at its rate", Pacing{Budget: 1200, Window: time.Minute}, 9.5, 10},
		{"known budget counts the call cost", Pacing{Budget: 1200, Window: time.Minute, CallCost: 1}, 19, 20},
		{"cap under a known budget", Pacing{Budget: 6000, MaxRate: 5}, 4.8, 5.1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const run = time.Minute
			got := simulate(unlimited(), tt.pacing, 64, 50*time.Millisecond, run, 0, 1)
			r := float64(got.sent) / run.Seconds()
			if r < tt.min || r > tt.max {
				t.Errorf("%.2f calls/s, want %.1f–%.1f", r, tt.min, tt.max)
			}
		})
	}
}

func TestPacerShare(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newPacer(Pacing{Budget: 1200}, t0) // 10 calls/s app-wide, 9.7 run at
	p.setShare(t0, 0.25, 0)
	if got, want := p.limit(), 10*quotaHeadroom/4; math.Abs(got-want) > 1e-9 {
		t.Errorf("limit at a quarter share %.3f, want %.3f", got, want)
	}
	p.setShare(t0, 1, 0)
	if got, want := p.limit(), 10*quotaHeadroom; math.Abs(got-want) > 1e-9 {
		t.Errorf("limit alone %.3f, want %.3f", got, want)
	}
	// A peer's cut lowers a probing pacer, never raises it.
	q := newPacer(Pacing{}, t0)
	q.adopt(t0, 2)
	if got := q.limit(); got != 2 {
		t.Errorf("limit after adopting 2/s: %.3f, want 2", got)
	}
	q.adopt(t0, 50)
	if got := q.limit(); got != 2 {
		t.Errorf("limit after adopting a higher rate: %.3f, want 2", got)
	}
}

func TestFlightAdapts(t *testing.T) {
	t.Parallel()
	f := newFlight(64)
	ctx := t.Context()
	if err := f.enter(ctx); err != nil {
		t.Fatal(err)
	}
	f.leave(true, false)
	if got, want := f.bound(), 57; got != want {
		t.Errorf("bound after a throttle %d, want %d", got, want)
	}
	for range 20 {
		f.leave(false, false) // not good answers: no growth (inFlight goes negative harmlessly here)
	}
	f.inFlight = 0
	if got, want := f.bound(), 57; got != want {
		t.Errorf("bound after answers that were not good %d, want %d", got, want)
	}
	for range 1000 {
		if err := f.enter(ctx); err != nil {
			t.Fatal(err)
		}
		f.leave(false, true)
	}
	if got, want := f.bound(), 64; got != want {
		t.Errorf("bound after many good answers %d, want %d", got, want)
	}
	for range 100 {
		f.inFlight++
		f.leave(true, false)
	}
	if got, want := f.bound(), 8; got != want {
		t.Errorf("bound after many throttles %d, want the floor %d", got, want)
	}
}

func TestParseQuota(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                   string
		limit, remaining, rset string
		want                   quota
	}{
		{"all three", "1250", "200", "30", quota{limit: 1250, remaining: 200, reset: 30 * time.Second, ok: true}},
		{"draft list form", "1250, 1250;w=60", "0", "5", quota{limit: 1250, remaining: 0, reset: 5 * time.Second, ok: true}},
		{"remaining above limit is clamped", "100", "500", "1", quota{limit: 100, remaining: 100, reset: time.Second, ok: true}},
		{"reset bounded", "100", "1", "99999999", quota{limit: 100, remaining: 1, reset: maxQuotaReset, ok: true}},
		{"missing reset", "100", "1", "", quota{}},
		{"negative", "100", "-1", "1", quota{}},
		{"junk", "many", "1", "1", quota{}},
		{"zero limit", "0", "0", "1", quota{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			for k, v := range map[string]string{"RateLimit-Limit": tt.limit, "RateLimit-Remaining": tt.remaining, "RateLimit-Reset": tt.rset} {
				if v != "" {
					h.Set(k, v)
				}
			}
			if got := parseQuota(h); got != tt.want {
				t.Errorf("parseQuota = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestPacerWakesOneWaiterPerTurn checks that batches queued behind the pace
// do not all wake at every turn: only the first in line asks the limiter,
// so asks grow with the calls, not with calls × waiters.
func TestPacerWakesOneWaiterPerTurn(t *testing.T) {
	t.Parallel()
	p := newPacer(Pacing{Budget: 6000}, time.Now()) // 50 calls/s app-wide, 48.5 run at
	const waiters = 80
	var asks atomic.Int64
	now := func() time.Time {
		asks.Add(1)
		return time.Now()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var g errgroup.Group
	for range waiters {
		g.Go(func() error { return p.wait(ctx, now) })
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("wait: %v", err)
	}
	// Each waiter asks once on arrival and, at the head, about once per
	// turn; all of them waking at each turn would ask hundreds of times.
	if got, most := asks.Load(), int64(4*waiters); got > most {
		t.Errorf("limiter asked %d times for %d calls, want at most %d", got, waiters, most)
	}
}
