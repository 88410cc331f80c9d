package handler_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphclient"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/handler"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

const joiner = "joiner@contoso.com"

// withNewUserWindow sets the new-account window and the delays the waits
// are paced by, short for tests.
func withNewUserWindow(window time.Duration, maxDeliver int) option {
	return withConfig(func(c *handler.Config) {
		c.NewUserWindow = window
		c.MaxDeliver = maxDeliver
		c.NakBaseDelay, c.NakMaxDelay = 100*time.Millisecond, time.Second
	})
}

// afterWaits runs then on the simulator once the user's calls were
// answered as for a user not provisioned yet waits times: right after the
// waits, whatever their timing, because it runs before the worker settles
// the delivery that saw the last of them.
func afterWaits(waits int, then func(*graphsim.Server)) option {
	return func(e *env) {
		e.wrap = func(g handler.Graph) handler.Graph {
			sim := e.sim // set by now: the replica starts after the simulator
			var once sync.Once
			return graphFunc(func(ctx context.Context, userID string, op graphclient.Operation, sites []string, opts ...graphclient.ApplyOption) []graphclient.SiteResult {
				results := g.Apply(ctx, userID, op, sites, opts...)
				if sim.NotProvisionedAnswers(userID) >= waits {
					once.Do(func() { then(sim) })
				}
				return results
			})
		}
	}
}

// unavailable makes the simulator answer the next n calls 503.
func unavailable(n int) func(*graphsim.Server) {
	return func(s *graphsim.Server) { s.Unavailable(n, http.StatusServiceUnavailable) }
}

// graphFunc is a handler.Graph made of a function.
type graphFunc func(ctx context.Context, userID string, op graphclient.Operation, sites []string, opts ...graphclient.ApplyOption) []graphclient.SiteResult

func (f graphFunc) Apply(ctx context.Context, userID string, op graphclient.Operation, sites []string, opts ...graphclient.ApplyOption) []graphclient.SiteResult {
	return f(ctx, userID, op, sites, opts...)
}

// sendAt publishes a follow request for sites with occurredAt.
func (e *env) sendAt(occurredAt time.Time, sites ...string) {
	e.t.Helper()
	b, err := json.Marshal(event.Request{UserID: joiner, Action: event.Follow, SiteIDs: sites,
		OccurredAt: occurredAt.UTC().Format(time.RFC3339)})
	if err != nil {
		e.t.Fatalf("encode request: %v", err)
	}
	e.publish("sitefollow.requests.hr", string(b))
}

// counter reads a counter's value from reg; 0 when it has no sample.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// TestJoinerIsFollowedOnceVisible: a joiner Graph cannot see for more
// deliveries than SITEFOLLOW_MAX_DELIVER allows is waited for and then
// followed, never dead-lettered; a 503 right after the waits is still
// retried, since the waits spent none of the request's deliveries.
func TestJoinerIsFollowedOnceVisible(t *testing.T) {
	t.Parallel()
	const waits, maxDeliver = 4, 2
	reg := prometheus.NewRegistry()
	// One delivery's calls (the client's 4 attempts) answered 503 once the
	// account is visible.
	e := newEnv(t, withNewUserWindow(time.Hour, maxDeliver), withMetrics(handler.NewMetrics(reg)), afterWaits(waits, unavailable(4)))
	e.sim.ProvisionLater(joiner, waits, time.Time{}, graphsim.MysiteNotFound)
	acks := testkit.WatchAcks(t, e.nc, stream, "sitefollow")

	e.sendAt(time.Now(), site(1), site(2))
	e.settled()

	if got, want := e.followed(joiner), sorted(site(1), site(2)); !slices.Equal(got, want) {
		t.Errorf("followed: got %v, want %v", got, want)
	}
	if got := e.deadLetters(); len(got) != 0 {
		t.Errorf("dead letters: got %d (first %q: %s), want none", len(got), got[0].Error.Code, got[0].Error.Message)
	}
	if got := e.sim.NotProvisionedAnswers(joiner); got != waits {
		t.Errorf("calls answered not provisioned: got %d, want %d", got, waits)
	}
	// waits, one delivery of 503s, then the one that applied.
	if got, want := acks.Delivered(1), uint64(waits+2); got != want || !acks.Acked(1) {
		t.Errorf("deliveries: got %d (acked %v), want %d, acked, though max-deliver is %d", got, acks.Acked(1), want, maxDeliver)
	}
	if got := counter(t, reg, "sitefollow_user_not_found_waits_total"); got != waits {
		t.Errorf("sitefollow_user_not_found_waits_total: got %v, want %d", got, waits)
	}
}

// TestRequestPastItsWindowIsDeadLetteredAtOnce: a request whose occurredAt
// is older than the window is dead-lettered userNotFound on its first 404,
// though it was only just published.
func TestRequestPastItsWindowIsDeadLetteredAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withNewUserWindow(24*time.Hour, 5))
	e.sim.ProvisionLater(joiner, 1000, time.Time{}, graphsim.MysiteNotFound)
	occurred := time.Now().Add(-25 * time.Hour)

	e.sendAt(occurred, site(1))
	e.settled()

	letters := e.deadLetters()
	if len(letters) != 1 {
		t.Fatalf("dead letters: got %d, want 1", len(letters))
	}
	d := letters[0]
	if d.Error.Code != event.CodeUserNotFound || d.Attempts != 1 || d.Error.HTTPStatus != http.StatusNotFound || d.Subject != dlqPrefix+".userNotFound" {
		t.Errorf("dead letter: got code %q attempts %d status %d subject %q, want userNotFound, 1, 404, %s.userNotFound",
			d.Error.Code, d.Attempts, d.Error.HTTPStatus, d.Subject, dlqPrefix)
	}
	for _, part := range []string{"itemNotFound", "User's mysite not found", "occurredAt " + occurred.UTC().Format(time.RFC3339), "24h0m0s"} {
		if !strings.Contains(d.Error.Message, part) {
			t.Errorf("dead letter message %q: want it to say %q", d.Error.Message, part)
		}
	}
	if got := e.sim.NotProvisionedAnswers(joiner); got != 1 {
		t.Errorf("calls answered not provisioned: got %d, want 1", got)
	}
}

// TestUserInvisibleAllWindowIsDeadLettered: a user Graph still cannot see
// when the window (from the publish time, without occurredAt) ends is
// dead-lettered userNotFound, not before the window's end, after waiting.
func TestUserInvisibleAllWindowIsDeadLettered(t *testing.T) {
	t.Parallel()
	const window = 2 * time.Second
	e := newEnv(t, withNewUserWindow(window, 2))
	e.sim.ProvisionLater(joiner, 0, time.Now().Add(time.Hour), graphsim.BeingProvisioned)
	published := time.Now()

	e.send(joiner, event.Follow, site(1))
	e.settled()

	letters := e.deadLetters()
	if len(letters) != 1 {
		t.Fatalf("dead letters: got %d, want 1", len(letters))
	}
	d := letters[0]
	if d.Error.Code != event.CodeUserNotFound {
		t.Errorf("dead letter code: got %q, want userNotFound (%s)", d.Error.Code, d.Error.Message)
	}
	if end := published.Add(window); d.DeadAt.Before(end) {
		t.Errorf("dead at %v: want not before the window's end %v", d.DeadAt, end)
	}
	for _, part := range []string{"resourceBeingProvisioned", "publish time", window.String()} {
		if !strings.Contains(d.Error.Message, part) {
			t.Errorf("dead letter message %q: want it to say %q", d.Error.Message, part)
		}
	}
	// More tries than max-deliver: the waits did not use it up.
	if got := e.sim.NotProvisionedAnswers(joiner); got <= 2 || d.Attempts != got {
		t.Errorf("calls answered not provisioned: got %d (attempts %d), want more than max-deliver 2 and one per delivery", got, d.Attempts)
	}
}

// TestWaitsDoNotSpendRetries: after several waits for a new user, a 503
// storm still gets every delivery SITEFOLLOW_MAX_DELIVER allows before the
// request is dead-lettered retriesExhausted.
func TestWaitsDoNotSpendRetries(t *testing.T) {
	t.Parallel()
	const waits, maxDeliver, attempts = 3, 3, 4 // attempts: the client's per delivery
	e := newEnv(t, withNewUserWindow(time.Hour, maxDeliver), afterWaits(waits, unavailable(10000)))
	e.sim.ProvisionLater(joiner, waits, time.Time{}, graphsim.MysiteNotFound)

	e.sendAt(time.Now(), site(1))
	e.settled()

	letters := e.deadLetters()
	if len(letters) != 1 {
		t.Fatalf("dead letters: got %d, want 1", len(letters))
	}
	d := letters[0]
	if d.Error.Code != event.CodeRetriesExhausted || d.Attempts != waits+maxDeliver {
		t.Errorf("dead letter: got code %q attempts %d, want retriesExhausted after %d waits and %d deliveries", d.Error.Code, d.Attempts, waits, maxDeliver)
	}
	if want := "gave up after 3 deliveries (and 3 more spent waiting for the user's new account): serviceNotAvailable: "; !strings.HasPrefix(d.Error.Message, want) {
		t.Errorf("dead letter message %q: want it to say %q", d.Error.Message, want)
	}
	unavailable := 0
	for _, c := range e.sim.Calls() {
		if c.UserID == joiner && c.Status == http.StatusServiceUnavailable {
			unavailable++
		}
	}
	if want := maxDeliver * attempts; unavailable != want {
		t.Errorf("calls answered 503: got %d, want %d (every delivery's attempts)", unavailable, want)
	}
}
