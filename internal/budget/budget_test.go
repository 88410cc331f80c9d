package budget_test

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sitefollow/sitefollow/internal/budget"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// pacer records what the shared budget tells it.
type pacer struct {
	mu       sync.Mutex
	admitted float64
	waiting  bool
	share    float64
	peers    float64
	pauses   []time.Duration
	rates    []float64
	ticks    int
}

func (p *pacer) Admitted() float64 { p.mu.Lock(); defer p.mu.Unlock(); return p.admitted }
func (p *pacer) Waiting() bool     { p.mu.Lock(); defer p.mu.Unlock(); return p.waiting }
func (p *pacer) SetShare(share, peers float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.share, p.peers = share, peers
	p.ticks++
}

func (p *pacer) tickCount() int { p.mu.Lock(); defer p.mu.Unlock(); return p.ticks }

func (p *pacer) Adopt(pause time.Duration, rate float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pauses = append(p.pauses, pause)
	p.rates = append(p.rates, rate)
}

func (p *pacer) state() (share, peers float64, pauses []time.Duration, rates []float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.share, p.peers, append([]time.Duration(nil), p.pauses...), append([]float64(nil), p.rates...)
}

// member runs one replica's Share until the returned stop is called.
func member(t *testing.T, url string, p *pacer) (*budget.Share, func()) {
	t.Helper()
	nc, _ := testkit.Connect(t, url)
	s, err := budget.New(budget.Config{Conn: nc, Interval: 50 * time.Millisecond, MaxPause: time.Minute, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("budget.New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, p) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			stop()
		}
	})
	return s, stop
}

func TestReplicasShareOneBudget(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATS(t, testkit.NATSOptions{})
	a := &pacer{admitted: 12, waiting: true}
	b := &pacer{admitted: 8, waiting: true}
	c := &pacer{} // idle: leaves its share to the busy ones
	sa, _ := member(t, ns.URL(), a)
	_, stopB := member(t, ns.URL(), b)
	member(t, ns.URL(), c)

	testkit.Eventually(t, time.Minute, "a's share to be a half with b's 8 calls/s", func() bool {
		share, peers, _, _ := a.state()
		return share == 0.5 && peers == 8
	})
	testkit.Eventually(t, time.Minute, "the idle replica's share to be a third", func() bool {
		share, peers, _, _ := c.state()
		return share == 1.0/3 && peers == 20
	})

	sa.Throttled(2*time.Second, 17.5)
	testkit.Eventually(t, time.Minute, "b to adopt a's throttle", func() bool {
		_, _, pauses, rates := b.state()
		return len(pauses) == 1 && pauses[0] == 2*time.Second && rates[0] == 17.5
	})
	// An unlimited pacer's pause still reaches the peers (JSON has no
	// infinity), with no rate to adopt.
	sa.Throttled(3*time.Second, math.Inf(1))
	testkit.Eventually(t, time.Minute, "b to adopt a pause without a rate", func() bool {
		_, _, pauses, rates := b.state()
		return len(pauses) == 2 && pauses[1] == 3*time.Second && rates[1] == 0
	})
	if _, _, pauses, _ := a.state(); len(pauses) != 0 {
		t.Errorf("a adopted its own throttle: %v", pauses)
	}

	stopB()
	testkit.Eventually(t, time.Minute, "a's share to return once b is gone", func() bool {
		share, peers, _, _ := a.state()
		return share == 1 && peers == 0
	})
}

func TestPeerMessagesAreBounded(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATS(t, testkit.NATSOptions{})
	a := &pacer{admitted: 1, waiting: true}
	member(t, ns.URL(), a)
	nc, _ := testkit.Connect(t, ns.URL())
	for _, tc := range []struct{ subject, body string }{
		{"sitefollow.budget.throttle", `not json`},
		{"sitefollow.budget.throttle", `{"replica":"x","pauseMs":99999999999,"rate":5}`},
		{"sitefollow.budget.throttle", `{"replica":"y","pauseMs":10,"rate":-5}`},
		{"sitefollow.budget.hello", `{"replica":"","admitted":3,"busy":true}`},
		{"sitefollow.budget.throttle", `{"replica":"marker","pauseMs":1,"rate":1}`},
	} {
		if err := nc.Publish(tc.subject, []byte(tc.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The marker comes last: once it is adopted, every message before it
	// was read; a heartbeat tick after that shows what the hello did.
	testkit.Eventually(t, time.Minute, "the marker to be adopted", func() bool {
		_, _, pauses, _ := a.state()
		return len(pauses) >= 2
	})
	ticks := a.tickCount()
	testkit.Eventually(t, time.Minute, "a heartbeat tick after the messages", func() bool { return a.tickCount() > ticks })
	share, _, pauses, rates := a.state()
	if len(pauses) != 2 || pauses[0] != time.Minute || rates[0] != 5 {
		t.Errorf("adopted %v at %v, want the capped pause (1m at rate 5), then the marker", pauses, rates)
	}
	if share != 1 {
		t.Errorf("share %v, want 1: the hello without a replica is dropped", share)
	}
}
