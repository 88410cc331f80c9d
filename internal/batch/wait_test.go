package batch

import (
	"strconv"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
)

// drain takes every batch due at now and returns their users in order.
func drain(a *Aggregator[string], now time.Time) []string {
	var users []string
	for {
		b, ok := a.Next(now)
		if !ok {
			return users
		}
		users = append(users, b.UserID)
	}
}

func TestWaitAppliesToEveryPendingBatch(t *testing.T) {
	tests := []struct {
		name string
		wait time.Duration
		now  time.Duration
		want int
	}{
		{"linger not yet passed", time.Second, 999 * time.Millisecond, 0},
		{"linger passed", time.Second, time.Second, 2},
		{"a longer wait holds partial batches past the linger", time.Minute, 30 * time.Second, 0},
		{"the longer wait passed", time.Minute, time.Minute, 2},
		{"no wait: everything pending is due", 0, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New[string](20, time.Second)
			a.Add("u1", event.Follow, []string{site(1)}, 1, "m1", t0)
			a.Add("u2", event.Follow, []string{site(1)}, 2, "m2", t0)
			a.SetWait(tt.wait)
			if got := len(drain(a, t0.Add(tt.now))); got != tt.want {
				t.Errorf("batches due: got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestLongerWaitStillSendsFullBatches(t *testing.T) {
	a := New[string](2, time.Second)
	a.SetWait(time.Hour)
	a.Add("u1", event.Follow, []string{site(1), site(2)}, 1, "m", t0)
	if got := drain(a, t0); len(got) != 1 {
		t.Errorf("full batches due: got %v, want u1", got)
	}
}

func TestFlushOldestGoesByFirstPendingSite(t *testing.T) {
	a := New[string](20, time.Second)
	a.SetWait(time.Hour)
	a.Add("u2", event.Follow, []string{site(1)}, 1, "a", t0.Add(2*time.Millisecond))
	a.Add("u1", event.Follow, []string{site(1)}, 2, "b", t0)
	a.Add("u3", event.Follow, []string{site(1)}, 3, "c", t0.Add(time.Millisecond))
	a.Add("u1", event.Follow, []string{site(2)}, 4, "d", t0.Add(3*time.Millisecond))
	now := t0.Add(time.Second)
	if got := drain(a, now); len(got) != 0 {
		t.Fatalf("due before any flush: got %v, want none", got)
	}
	if got := a.FlushOldest(2); got != 2 {
		t.Fatalf("flushed: got %d, want 2", got)
	}
	got := drain(a, now)
	if len(got) != 2 || got[0] != "u1" || got[1] != "u3" {
		t.Errorf("flushed oldest first: got %v, want [u1 u3]", got)
	}
	if got := a.FlushOldest(5); got != 1 {
		t.Errorf("flushed: got %d, want 1 (only u2 is left)", got)
	}
}

func TestReturnedBatchWaitsForNotBeforeEvenWithoutWait(t *testing.T) {
	a := New[string](20, time.Second)
	a.Add("u1", event.Follow, []string{site(1)}, 1, "m", t0)
	a.SetWait(0)
	b, ok := a.Next(t0)
	if !ok {
		t.Fatal("batch not due with no wait")
	}
	a.Return(b, t0.Add(time.Second))
	if _, ok := a.Next(t0.Add(999 * time.Millisecond)); ok {
		t.Fatal("handed-back batch taken before its notBefore")
	}
	if at, ok := a.Deadline(); !ok || !at.Equal(t0.Add(time.Second)) {
		t.Errorf("deadline: got %v %v, want %v", at, ok, t0.Add(time.Second))
	}
	if _, ok := a.Next(t0.Add(time.Second)); !ok {
		t.Error("handed-back batch not due at its notBefore")
	}
}

func TestNoWaitLooksAtEachUserOnce(t *testing.T) {
	// A drained stream: every batch due at once, taken one by one as
	// workers free up. The aggregator's work must follow the batches, not
	// users × calls.
	const users = 1000
	a := New[string](20, time.Second)
	for u := range users {
		a.Add("user"+string(rune('a'+u%26))+itoa(u), event.Follow, []string{site(1)}, uint64(u+1), "m", t0)
	}
	a.SetWait(0)
	for range users {
		b, ok := a.Next(t0)
		if !ok {
			t.Fatal("batch not due with no wait")
		}
		a.Complete(b, t0)
	}
	if v := a.Visits(); v > 4*users {
		t.Errorf("visits: got %d, want at most %d", v, 4*users)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
