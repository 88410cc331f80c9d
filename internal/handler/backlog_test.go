package handler_test

import (
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/handler"
)

// publishRoundRobin publishes users × perUser one-site follows, user after
// user, so a user's requests are users messages apart, as in a
// reorganisation backlog.
func (e *env) publishRoundRobin(users, perUser int) {
	e.t.Helper()
	for s := range perUser {
		for u := range users {
			e.send("user"+itoa(u)+"@contoso.com", event.Follow, site(s))
		}
	}
}

func TestLoopSleepsWhileEveryWorkerIsBusy(t *testing.T) {
	t.Parallel()
	// Two workers (one Graph slot), both held by a slow Graph; batches that
	// come due behind them can only wait. The loop has nothing to do until
	// a worker reports back, so it must not turn meanwhile.
	e := newEnv(t, withConfig(func(c *handler.Config) {
		c.MaxConcurrency = 1
		c.BatchLinger = 10 * time.Millisecond
	}))
	e.sim.SetLatency(time.Second)
	e.send("user0@contoso.com", event.Follow, site(1))
	e.send("user1@contoso.com", event.Follow, site(1))
	e.eventually("a first Graph call", func() bool { return e.sim.CallCount() >= 1 })
	// Both workers are busy now: one in its call, one waiting for the slot.
	for u := 2; u < 8; u++ {
		e.send("user"+itoa(u)+"@contoso.com", event.Follow, site(1))
	}
	h := e.current.h
	from := h.LoopTurns()
	e.eventually("a third Graph call", func() bool { return e.sim.CallCount() >= 3 })
	turns := h.LoopTurns() - from
	t.Logf("loop turns while two calls were answered: %d", turns)
	// A few turns per arrival, per call answered and per gauge tick; a
	// loop re-arming a timer it cannot act on turns hundreds of thousands
	// of times.
	if turns > 500 {
		t.Errorf("loop turns while two calls were answered: got %d, want at most 500", turns)
	}
	e.settled()
}

func TestDrainedStreamIsFlushedOnce(t *testing.T) {
	t.Parallel()
	// An hour of linger: only the quiet rule sends these batches, one by
	// one (two workers). Making them due once per quiet period costs the
	// aggregator a few looks per user; making them due on every turn would
	// look at every user still pending on every batch's return.
	const users = 400
	e := newEnv(t, withConfig(func(c *handler.Config) {
		c.MaxConcurrency = 1
		c.BatchLinger = time.Hour
		c.BatchQuiet = 50 * time.Millisecond
	}))
	e.stop()
	e.publishRoundRobin(users, 1)
	e.start()
	e.settled()
	if got := e.sim.CallCount(); got != users {
		t.Errorf("graph calls: got %d, want %d", got, users)
	}
	visits := e.current.h.AggregatorVisits()
	t.Logf("aggregator visits for %d users: %d", users, visits)
	if visits > 20*users {
		t.Errorf("aggregator visits: got %d, want at most %d (a few per user)", visits, 20*users)
	}
}

func TestBacklogOfManyUsersGoesOutInFullCalls(t *testing.T) {
	t.Parallel()
	// Each user's five requests are 1,000 messages apart, and the linger is
	// far shorter than the backlog takes to arrive: while more of the
	// stream is undelivered, partial batches keep gathering, so each user
	// gets one call with all five sites.
	const users, perUser = 1000, 5
	e := newEnv(t, withConfig(func(c *handler.Config) {
		c.BatchLinger = time.Millisecond
		// Generous: a delivery pause longer than this (a loaded machine,
		// the race detector) counts as a stalled stream and sends partial
		// batches, which is right for the consumer but not what this test
		// is about.
		c.BatchQuiet = 2 * time.Second
		c.MaxAckPending = 6000
	}))
	e.stop()
	e.publishRoundRobin(users, perUser)
	e.start()
	e.settled()
	calls := e.sim.Calls()
	if len(calls) != users {
		t.Errorf("graph calls: got %d, want %d (one per user)", len(calls), users)
	}
	for _, c := range calls {
		if len(c.SiteIDs) != perUser {
			t.Errorf("call for %s: got %d sites, want %d", c.UserID, len(c.SiteIDs), perUser)
			break
		}
	}
}

func TestFullWindowSendsOldestBatchesFirst(t *testing.T) {
	t.Parallel()
	// The backlog does not fit: 100 users × 10 requests with room for 400
	// held. Partial batches must not wait for sites that cannot arrive
	// until room is made: the oldest go, and the stream drains.
	const users, perUser = 100, 10
	e := newEnv(t, withConfig(func(c *handler.Config) {
		c.BatchLinger = time.Hour
		c.BatchQuiet = 50 * time.Millisecond
		c.MaxAckPending = 400
	}))
	e.stop()
	e.publishRoundRobin(users, perUser)
	e.start()
	e.settled()
	calls := e.sim.Calls()
	sites := 0
	for _, c := range calls {
		sites += len(c.SiteIDs)
	}
	if sites != users*perUser {
		t.Errorf("sites sent: got %d, want %d", sites, users*perUser)
	}
	t.Logf("%d calls for %d sites", len(calls), sites)
	// With 400 held over 100 users a call carries about four sites.
	if len(calls) > users*perUser/2 {
		t.Errorf("graph calls: got %d, want at most %d (about four sites each)", len(calls), users*perUser/2)
	}
}
