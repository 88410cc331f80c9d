package handler_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// TestJSONBatchAcrossUsers runs the handler (embedded NATS, the simulator
// over HTTP) with JSON batching on: several users' calls share $batch
// envelopes, one of them throttled (429 with Retry-After), one refusing a
// site (207) and one a remove (204); every request is acknowledged, the
// refused site dead-lettered, and only the throttled user's call sent again.
func TestJSONBatchAcrossUsers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withJSONBatch(100*time.Millisecond))
	const users = 6
	user := func(i int) string { return fmt.Sprintf("user-%d@contoso.com", i) }
	e.sim.SetFollowed(user(0), site(50))
	e.sim.ThrottleUser(user(1), 1, "1")
	e.sim.FailSite(site(12), "accessDenied", 100)
	e.send(user(0), event.Unfollow, site(50))
	e.send(user(2), event.Follow, site(11), site(12))
	for i := 1; i < users; i++ {
		if i != 2 {
			e.send(user(i), event.Follow, site(i))
		}
	}
	e.settled()

	calls := e.sim.Calls()
	groups := map[int][]graphsim.Call{}
	for _, c := range calls {
		groups[c.HTTPRequest] = append(groups[c.HTTPRequest], c)
	}
	shared := 0
	for _, g := range groups {
		if len(g) > 1 {
			shared++
		}
	}
	if shared == 0 || e.sim.HTTPRequests() >= len(calls) {
		t.Errorf("%d calls in %d HTTP requests, %d envelopes shared: want calls of several users in one $batch", len(calls), e.sim.HTTPRequests(), shared)
	}
	perUser := map[string][]int{}
	for _, c := range calls {
		perUser[c.UserID] = append(perUser[c.UserID], c.Status)
	}
	wantStatuses := map[string][]int{
		user(0): {http.StatusNoContent},
		user(1): {http.StatusTooManyRequests, http.StatusOK},
		user(2): {http.StatusMultiStatus},
		user(3): {http.StatusOK},
		user(4): {http.StatusOK},
		user(5): {http.StatusOK},
	}
	for u, want := range wantStatuses {
		if got := perUser[u]; !slices.Equal(got, want) {
			t.Errorf("%s: statuses %v, want %v", u, got, want)
		}
	}
	if got := e.followed(user(0)); len(got) != 0 {
		t.Errorf("%s follows %v after the unfollow", user(0), got)
	}
	if got, want := e.followed(user(2)), sorted(site(11)); !slices.Equal(got, want) {
		t.Errorf("%s follows %v, want %v", user(2), got, want)
	}
	for i := 1; i < users; i++ {
		if i == 2 {
			continue
		}
		if got, want := e.followed(user(i)), sorted(site(i)); !slices.Equal(got, want) {
			t.Errorf("%s follows %v, want %v", user(i), got, want)
		}
	}
	letters := e.deadLetters()
	if len(letters) != 1 {
		t.Fatalf("dead letters: got %d, want 1 (the refused site)", len(letters))
	}
	if got := e.sim.EarlyCalls(); got != 0 {
		t.Errorf("early calls: got %d, want 0", got)
	}
}
