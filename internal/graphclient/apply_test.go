package graphclient

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

const unknownSite = "contoso.sharepoint.com,99999999-1111-4111-8111-111111111111,99999999-2222-4222-8222-222222222222"

func TestApplyAnswers(t *testing.T) {
	tests := []struct {
		name       string
		op         Operation
		ids        []string
		followed   []string // state before the call
		setup      func(*graphsim.Server)
		wants      []want
		wantStatus int // status of the single call
		wantState  []string
	}{
		{
			name:       "add 200",
			op:         Add,
			ids:        siteIDs(1, 3),
			wants:      []want{{outcome: Applied, attempts: 1}, {outcome: Applied, attempts: 1}, {outcome: Applied, attempts: 1}},
			wantStatus: http.StatusOK,
			wantState:  siteIDs(1, 3),
		},
		{
			name:       "add 200 upper-case answer",
			op:         Add,
			ids:        siteIDs(1, 2),
			setup:      func(s *graphsim.Server) { s.UpperCaseIDs(true) },
			wants:      allApplied(2),
			wantStatus: http.StatusOK,
			wantState:  siteIDs(1, 2),
		},
		{
			name:       "add upper-case request",
			op:         Add,
			ids:        []string{strings.ToUpper(siteID(4))},
			wants:      allApplied(1),
			wantStatus: http.StatusOK,
			wantState:  []string{siteID(4)},
		},
		{
			name: "add 207 unknown site rejected",
			op:   Add,
			ids:  []string{siteID(1), unknownSite, siteID(2)},
			wants: []want{
				{outcome: Applied},
				{outcome: Rejected, code: "invalidRequest", status: http.StatusMultiStatus, attempts: 1},
				{outcome: Applied},
			},
			wantStatus: http.StatusMultiStatus,
			wantState:  siteIDs(1, 2),
		},
		{
			name:  "add 207 upper-case answer with extra error entry",
			op:    Add,
			ids:   []string{siteID(1), unknownSite, siteID(2)},
			setup: func(s *graphsim.Server) { s.UpperCaseIDs(true); s.ExtraErrorEntry(true) },
			wants: []want{
				{outcome: Applied},
				{outcome: Rejected, code: "invalidRequest", status: http.StatusMultiStatus},
				{outcome: Applied},
			},
			wantStatus: http.StatusMultiStatus,
			wantState:  siteIDs(1, 2),
		},
		{
			name: "add 207 permanent site error",
			op:   Add,
			ids:  siteIDs(1, 3),
			setup: func(s *graphsim.Server) {
				s.FailSite(siteID(2), "accessDenied", 1)
			},
			wants: []want{
				{outcome: Applied},
				{outcome: Rejected, code: "accessDenied", status: http.StatusMultiStatus, attempts: 1},
				{outcome: Applied},
			},
			wantStatus: http.StatusMultiStatus,
			wantState:  []string{siteID(1), siteID(3)},
		},
		{
			name:       "remove 204",
			op:         Remove,
			ids:        siteIDs(1, 2),
			followed:   siteIDs(1, 3),
			wants:      allApplied(2),
			wantStatus: http.StatusNoContent,
			wantState:  []string{siteID(3)},
		},
		{
			name:     "remove 207 lists only failures",
			op:       Remove,
			ids:      []string{siteID(1), unknownSite, siteID(2)},
			followed: siteIDs(1, 3),
			setup:    func(s *graphsim.Server) { s.UpperCaseIDs(true) },
			wants: []want{
				{outcome: Applied},
				{outcome: Rejected, code: "invalidRequest", status: http.StatusMultiStatus},
				{outcome: Applied},
			},
			wantStatus: http.StatusMultiStatus,
			wantState:  []string{siteID(3)},
		},
		{
			name:     "remove 207 permanent site error",
			op:       Remove,
			ids:      siteIDs(1, 2),
			followed: siteIDs(1, 2),
			setup:    func(s *graphsim.Server) { s.FailSite(strings.ToUpper(siteID(1)), "accessDenied", 1) },
			wants: []want{
				{outcome: Rejected, code: "accessDenied", status: http.StatusMultiStatus},
				{outcome: Applied},
			},
			wantStatus: http.StatusMultiStatus,
			wantState:  []string{siteID(1)},
		},
		{
			name:       "duplicate ids sent once",
			op:         Add,
			ids:        []string{siteID(5), strings.ToUpper(siteID(5))},
			wants:      []want{{outcome: Applied, attempts: 1}, {outcome: Applied, attempts: 1}},
			wantStatus: http.StatusOK,
			wantState:  []string{siteID(5)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newSim(t)
			const user = "adele@contoso.com"
			sim.SetFollowed(user, tt.followed...)
			if tt.setup != nil {
				tt.setup(sim)
			}
			c := newSimClient(t, sim, nil)

			got := c.Apply(context.Background(), user, tt.op, tt.ids)

			checkResults(t, tt.ids, got, tt.wants)
			calls := sim.Calls()
			if len(calls) != 1 {
				t.Fatalf("got %d calls, want 1: %+v", len(calls), calls)
			}
			if calls[0].Status != tt.wantStatus || calls[0].Op != string(tt.op) || calls[0].UserID != user {
				t.Errorf("call = %s %s status %d, want %s %s status %d", calls[0].Op, calls[0].UserID, calls[0].Status, tt.op, user, tt.wantStatus)
			}
			if gotState, wantState := sim.Followed(user), lower(tt.wantState); !slices.Equal(gotState, wantState) {
				t.Errorf("followed = %v, want %v", gotState, wantState)
			}
			for i, r := range got {
				if r.Outcome == Rejected && (r.Err.RequestID == "" || r.Err.ClientRequestID != calls[0].ClientRequestID) {
					t.Errorf("result %d: request ids = %q/%q, want non-empty/%q", i, r.Err.RequestID, r.Err.ClientRequestID, calls[0].ClientRequestID)
				}
			}
		})
	}
}

// Applied must only ever be reported for a site Graph confirmed; the sim's
// state is the truth to compare with.
func TestApplyOmittedSiteResent(t *testing.T) {
	tests := []struct {
		name      string
		omit      int
		wantSite2 want
		wantCalls int
	}{
		{name: "resolved by re-send", omit: 1, wantSite2: want{outcome: Applied, attempts: 2}, wantCalls: 2},
		{name: "resolved on third call", omit: 2, wantSite2: want{outcome: Applied, attempts: 3}, wantCalls: 3},
		{name: "never confirmed", omit: 100, wantSite2: want{outcome: Unresolved, code: CodeUnconfirmed, status: http.StatusMultiStatus, attempts: 3}, wantCalls: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newSim(t)
			sim.OmitSite(siteID(2), tt.omit)
			sim.ExtraErrorEntry(true)
			c := newSimClient(t, sim, func(cfg *Config) { cfg.MaxAttempts = 3 })
			ids := siteIDs(1, 3)

			got := c.Apply(context.Background(), "u1", Add, ids)

			checkResults(t, ids, got, []want{{outcome: Applied, attempts: 1}, tt.wantSite2, {outcome: Applied, attempts: 1}})
			calls := sim.Calls()
			if len(calls) != tt.wantCalls {
				t.Fatalf("got %d calls, want %d", len(calls), tt.wantCalls)
			}
			for i, call := range calls[1:] {
				if !slices.Equal(call.SiteIDs, []string{siteID(2)}) {
					t.Errorf("re-send %d carried %v, want only site 2", i+1, call.SiteIDs)
				}
			}
			followed := slices.Contains(sim.Followed("u1"), siteID(2))
			if followed != (tt.wantSite2.outcome == Applied) {
				t.Errorf("site 2 followed = %v but outcome %v", followed, got[1].Outcome)
			}
		})
	}
}

func TestApplyTransientSiteErrorRetriedAlone(t *testing.T) {
	codes := []string{"activityLimitReached", "serviceNotAvailable", "generalException", "throttledRequest", "TooManyRequests"}
	for _, code := range codes {
		t.Run(code, func(t *testing.T) {
			sim := newSim(t)
			sim.FailSite(siteID(2), code, 2)
			c := newSimClient(t, sim, nil)
			ids := siteIDs(1, 3)

			got := c.Apply(context.Background(), "u1", Add, ids)

			checkResults(t, ids, got, []want{{outcome: Applied, attempts: 1}, {outcome: Applied, attempts: 3}, {outcome: Applied, attempts: 1}})
			calls := sim.Calls()
			if len(calls) != 3 {
				t.Fatalf("got %d calls, want 3", len(calls))
			}
			if !slices.Equal(calls[0].SiteIDs, ids) {
				t.Errorf("first call carried %v, want %v", calls[0].SiteIDs, ids)
			}
			for _, call := range calls[1:] {
				if !slices.Equal(call.SiteIDs, []string{siteID(2)}) {
					t.Errorf("retry carried %v, want only site 2", call.SiteIDs)
				}
			}
		})
	}
}

func TestApplyTransientSiteErrorExhausted(t *testing.T) {
	sim := newSim(t)
	sim.FailSite(siteID(1), "activityLimitReached", 100)
	c := newSimClient(t, sim, func(cfg *Config) { cfg.MaxAttempts = 2 })
	ids := siteIDs(1, 2)

	got := c.Apply(context.Background(), "u1", Add, ids)

	checkResults(t, ids, got, []want{
		{outcome: Unresolved, code: "activityLimitReached", status: http.StatusMultiStatus, attempts: 2},
		{outcome: Applied, attempts: 1},
	})
}

func TestApplyWholeCallTransient(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		n         int
		attempts  int
		want      want
		wantCalls int
	}{
		{name: "503 then success", status: http.StatusServiceUnavailable, n: 1, attempts: 5, want: want{outcome: Applied, attempts: 2}, wantCalls: 2},
		{name: "504 twice then success", status: http.StatusGatewayTimeout, n: 2, attempts: 5, want: want{outcome: Applied, attempts: 3}, wantCalls: 3},
		{name: "503 exhausted", status: http.StatusServiceUnavailable, n: 10, attempts: 3, want: want{outcome: Unresolved, code: "serviceNotAvailable", status: http.StatusServiceUnavailable, attempts: 3}, wantCalls: 3},
		{name: "504 exhausted", status: http.StatusGatewayTimeout, n: 10, attempts: 2, want: want{outcome: Unresolved, status: http.StatusGatewayTimeout, attempts: 2}, wantCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newSim(t)
			sim.Unavailable(tt.n, tt.status)
			c := newSimClient(t, sim, func(cfg *Config) { cfg.MaxAttempts = tt.attempts })
			ids := siteIDs(1, 2)

			got := c.Apply(context.Background(), "u1", Add, ids)

			checkResults(t, ids, got, []want{tt.want, tt.want})
			if n := sim.CallCount(); n != tt.wantCalls {
				t.Errorf("got %d calls, want %d", n, tt.wantCalls)
			}
		})
	}
}

func TestApplyUnknownUserRejected(t *testing.T) {
	sim := newSim(t)
	sim.UnknownUser("ghost@contoso.com")
	c := newSimClient(t, sim, nil)
	ids := siteIDs(1, 2)

	got := c.Apply(context.Background(), "ghost@contoso.com", Add, ids)

	w := want{outcome: Rejected, code: CodeUserNotFound, status: http.StatusNotFound, attempts: 1}
	checkResults(t, ids, got, []want{w, w})
	if got[0].Err.RequestID == "" {
		t.Errorf("RequestID empty, want the response's request-id")
	}
	if n := sim.CallCount(); n != 1 {
		t.Errorf("got %d calls, want 1 (404 is permanent)", n)
	}
}

func TestApplyThrottleHonoursRetryAfter(t *testing.T) {
	tests := []struct {
		name       string
		retryAfter func(now time.Time) string
		wait       time.Duration // minimum distance between the 429 and the next call
	}{
		{name: "seconds", retryAfter: func(time.Time) string { return "1" }, wait: time.Second},
		{name: "fractional seconds", retryAfter: func(time.Time) string { return "0.25" }, wait: 250 * time.Millisecond},
		{name: "http date", retryAfter: func(now time.Time) string {
			return now.Add(2 * time.Second).UTC().Format(http.TimeFormat)
		}, wait: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newSim(t)
			c := newSimClient(t, sim, nil)
			sim.Throttle(1, tt.retryAfter(time.Now()))
			ids := siteIDs(1, 2)

			got := c.Apply(context.Background(), "u1", Add, ids)

			checkResults(t, ids, got, []want{{outcome: Applied, attempts: 2}, {outcome: Applied, attempts: 2}})
			calls := sim.Calls()
			if len(calls) != 2 || calls[0].Status != http.StatusTooManyRequests {
				t.Fatalf("calls = %+v, want a 429 then one more", calls)
			}
			if notBefore := calls[0].At.Add(tt.wait); calls[1].At.Before(notBefore) {
				t.Errorf("retry arrived at %v, before %v", calls[1].At, notBefore)
			}
			if calls[0].RetryAfter > 0 && calls[1].At.Before(calls[0].At.Add(calls[0].RetryAfter)) {
				t.Errorf("retry arrived at %v, before 429 time + Retry-After %v", calls[1].At, calls[0].RetryAfter)
			}
			if n := sim.EarlyCalls(); n != 0 {
				t.Errorf("EarlyCalls = %d, want 0", n)
			}
		})
	}
}

// A 429 for one user must hold back every other user's calls too: Graph
// throttles per app.
func TestThrottleGateIsAppWide(t *testing.T) {
	sim := newSim(t)
	c := newSimClient(t, sim, nil)
	if err := c.CheckToken(context.Background()); err != nil {
		t.Fatalf("CheckToken: %v", err)
	}
	sim.Throttle(1, "1")

	var wg sync.WaitGroup
	var gotA, gotB []SiteResult
	wg.Go(func() { gotA = c.Apply(context.Background(), "userA", Add, []string{siteID(1)}) })
	// Start B only once A's 429 has reached the client's gate.
	waitFor(t, "the gate to close", func() bool { return c.ThrottledUntil().After(time.Now()) })
	wg.Go(func() { gotB = c.Apply(context.Background(), "userB", Add, []string{siteID(2)}) })
	wg.Wait()

	checkResults(t, []string{siteID(1)}, gotA, allApplied(1))
	checkResults(t, []string{siteID(2)}, gotB, allApplied(1))
	calls := sim.Calls()
	if len(calls) != 3 || calls[0].UserID != "userA" || calls[0].Status != http.StatusTooManyRequests {
		t.Fatalf("calls = %+v, want userA's 429 and two more", calls)
	}
	notBefore := calls[0].At.Add(time.Second)
	for _, call := range calls[1:] {
		if call.At.Before(notBefore) {
			t.Errorf("%s's call arrived at %v, before the 429's deadline %v", call.UserID, call.At, notBefore)
		}
	}
	if n := sim.EarlyCalls(); n != 0 {
		t.Errorf("EarlyCalls = %d, want 0", n)
	}
}

func TestApplyRetryAfterBeyondLimit(t *testing.T) {
	sim := newSim(t)
	sim.Throttle(1, "120")
	c := newSimClient(t, sim, func(cfg *Config) { cfg.MaxRetryAfter = time.Second })
	ids := siteIDs(1, 2)

	got := c.Apply(context.Background(), "u1", Add, ids)

	w := want{outcome: Unresolved, status: http.StatusTooManyRequests, attempts: 1}
	checkResults(t, ids, got, []want{w, w})
	if ra := got[0].Err.RetryAfter; ra < 119*time.Second {
		t.Errorf("RetryAfter = %v, want about 120s", ra)
	}
	// A pause beyond MaxRetryAfter is not honoured in process: the gate
	// holds every user's calls for MaxRetryAfter only (a Retry-After years
	// ahead must not stop the app), then another user's call goes out.
	other := c.Apply(context.Background(), "u2", Add, []string{siteID(3)})
	checkResults(t, []string{siteID(3)}, other, []want{{outcome: Applied, attempts: 1}})
	calls := sim.Calls()
	if len(calls) != 2 {
		t.Fatalf("got %d calls, want 2", len(calls))
	}
	if notBefore := calls[0].Answered.Add(time.Second); calls[1].At.Before(notBefore) {
		t.Errorf("other user's call at %v, before the gate (MaxRetryAfter after the 429, %v) opened", calls[1].At, notBefore)
	}
}

// The last attempt's 429 ends the Apply instead of waiting for a call that
// will never be made.
func TestApplyThrottledOnLastAttemptDoesNotWait(t *testing.T) {
	sim := newSim(t)
	sim.Throttle(1, "60")
	c := newSimClient(t, sim, func(cfg *Config) { cfg.MaxAttempts = 1 })

	got := c.Apply(context.Background(), "u1", Add, []string{siteID(1)})

	checkResults(t, []string{siteID(1)}, got, []want{{outcome: Unresolved, status: http.StatusTooManyRequests, attempts: 1}})
	if got[0].Err.RetryAfter < 59*time.Second {
		t.Errorf("RetryAfter = %v, want about 60s", got[0].Err.RetryAfter)
	}
}

func TestApplyRefreshesRevokedToken(t *testing.T) {
	sim := newSim(t)
	c := newSimClient(t, sim, nil)
	if got := c.Apply(context.Background(), "u1", Add, []string{siteID(1)}); got[0].Outcome != Applied {
		t.Fatalf("first apply: %+v", got[0])
	}
	if n := sim.TokenRequests(); n != 1 {
		t.Fatalf("TokenRequests = %d after first apply, want 1", n)
	}
	sim.RevokeTokens()
	sim.Reset()

	got := c.Apply(context.Background(), "u1", Add, []string{siteID(2)})

	checkResults(t, []string{siteID(2)}, got, []want{{outcome: Applied, attempts: 2}})
	if n := sim.TokenRequests(); n != 1 {
		t.Errorf("TokenRequests = %d after revocation, want exactly 1 refresh", n)
	}
	calls := sim.Calls()
	if len(calls) != 2 || calls[0].Status != http.StatusUnauthorized || calls[1].Status != http.StatusOK {
		t.Errorf("calls = %+v, want 401 then 200", calls)
	}
	// The refreshed token is cached: no further token requests.
	if got := c.Apply(context.Background(), "u1", Add, []string{siteID(3)}); got[0].Outcome != Applied {
		t.Errorf("third apply: %+v", got[0])
	}
	if n := sim.TokenRequests(); n != 1 {
		t.Errorf("TokenRequests = %d, want the refreshed token reused", n)
	}
}

// Many calls answered 401 at once share one refresh.
func TestApplyConcurrentRefreshSharesOneTokenRequest(t *testing.T) {
	sim := newSim(t)
	c := newSimClient(t, sim, nil)
	if err := c.CheckToken(context.Background()); err != nil {
		t.Fatalf("CheckToken: %v", err)
	}
	sim.RevokeTokens()
	sim.Reset()

	var wg sync.WaitGroup
	results := make([][]SiteResult, 6)
	for i := range results {
		wg.Go(func() {
			results[i] = c.Apply(context.Background(), "user"+string(rune('a'+i)), Add, []string{siteID(i + 1)})
		})
	}
	wg.Wait()
	for i, got := range results {
		if got[0].Outcome != Applied {
			t.Errorf("user %d: %+v (err %+v)", i, got[0], got[0].Err)
		}
	}
	if n := sim.TokenRequests(); n != 1 {
		t.Errorf("TokenRequests = %d, want 1", n)
	}
}

func TestApplyContextCanceled(t *testing.T) {
	t.Run("before start", func(t *testing.T) {
		sim := newSim(t)
		c := newSimClient(t, sim, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()

		got := c.Apply(ctx, "u1", Add, siteIDs(1, 2))

		w := want{outcome: Unresolved, code: CodeCanceled}
		checkResults(t, siteIDs(1, 2), got, []want{w, w})
		if got[0].Err.HTTPStatus != 0 {
			t.Errorf("HTTPStatus = %d, want 0", got[0].Err.HTTPStatus)
		}
		if n := sim.CallCount(); n != 0 {
			t.Errorf("got %d calls, want 0", n)
		}
	})
	t.Run("during call", func(t *testing.T) {
		sim := newSim(t)
		c := newSimClient(t, sim, nil)
		sim.SetLatency(time.Minute)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan []SiteResult)
		go func() { done <- c.Apply(ctx, "u1", Add, siteIDs(1, 2)) }()
		waitFor(t, "the call to arrive", func() bool { return sim.CallCount() == 1 })
		cancel()
		got := <-done

		w := want{outcome: Unresolved, code: CodeCanceled, attempts: 1}
		checkResults(t, siteIDs(1, 2), got, []want{w, w})
		if len(sim.Followed("u1")) != 0 {
			t.Errorf("followed = %v, want none", sim.Followed("u1"))
		}
	})
	t.Run("while throttled", func(t *testing.T) {
		sim := newSim(t)
		c := newSimClient(t, sim, nil)
		sim.Throttle(1, "30")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan []SiteResult)
		go func() { done <- c.Apply(ctx, "u1", Add, siteIDs(1, 2)) }()
		waitFor(t, "the gate to close", func() bool { return c.ThrottledUntil().After(time.Now()) })
		cancel()
		got := <-done

		w := want{outcome: Unresolved, code: CodeCanceled, attempts: 1}
		checkResults(t, siteIDs(1, 2), got, []want{w, w})
		if n := sim.CallCount(); n != 1 {
			t.Errorf("got %d calls, want 1", n)
		}
	})
}

func TestApplyRequestTimeout(t *testing.T) {
	sim := newSim(t)
	c := newSimClient(t, sim, func(cfg *Config) {
		cfg.RequestTimeout = 100 * time.Millisecond
		cfg.MaxAttempts = 2
	})
	if err := c.CheckToken(context.Background()); err != nil {
		t.Fatalf("CheckToken: %v", err)
	}
	sim.SetLatency(time.Minute)

	got := c.Apply(context.Background(), "u1", Add, []string{siteID(1)})

	checkResults(t, []string{siteID(1)}, got, []want{{outcome: Unresolved, code: CodeTimeout, attempts: 2}})
	if got[0].Err.HTTPStatus != 0 || got[0].Err.ClientRequestID == "" {
		t.Errorf("err = %+v, want no status and the client-request-id", got[0].Err)
	}
}

// No user id may reach another Graph path: it always travels as one escaped
// segment.
func TestApplyEscapesUserID(t *testing.T) {
	users := []string{"a/b", "../../me", "x%2Fy", "user@contoso.com", "a?b#c", "..%2F..", "sp ace", "a/../b"}
	for _, user := range users {
		t.Run(user, func(t *testing.T) {
			sim := newSim(t)
			c := newSimClient(t, sim, nil)

			got := c.Apply(context.Background(), user, Add, []string{siteID(1)})

			checkResults(t, []string{siteID(1)}, got, allApplied(1))
			calls := sim.Calls()
			if len(calls) != 1 || calls[0].UserID != user || calls[0].Op != "add" {
				t.Fatalf("calls = %+v, want one add for user %q", calls, user)
			}
			if f := sim.Followed(user); !slices.Equal(f, []string{siteID(1)}) {
				t.Errorf("followed = %v", f)
			}
		})
	}
}

func TestApplyRefusesUnusableInput(t *testing.T) {
	sim := newSim(t)
	c := newSimClient(t, sim, nil)
	tests := []struct {
		name string
		user string
		op   Operation
		code string
	}{
		{name: "dot user", user: ".", op: Add, code: CodeInvalidUserID},
		{name: "dot-dot user", user: "..", op: Remove, code: CodeInvalidUserID},
		{name: "empty user", user: "", op: Add, code: CodeInvalidUserID},
		{name: "unknown operation", user: "u1", op: "follow", code: CodeInvalidOperation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.Apply(context.Background(), tt.user, tt.op, []string{siteID(1)})
			checkResults(t, []string{siteID(1)}, got, []want{{outcome: Rejected, code: tt.code}})
		})
	}
	if got := c.Apply(context.Background(), "u1", Add, nil); len(got) != 0 {
		t.Errorf("Apply(nil) = %v, want empty", got)
	}
	if n := sim.CallCount(); n != 0 {
		t.Errorf("got %d calls, want 0", n)
	}
}

func TestApplySendsUserAgentAndClientRequestID(t *testing.T) {
	sim := newSim(t)
	sim.FailSite(siteID(1), "generalException", 1)
	c := newSimClient(t, sim, nil)

	c.Apply(context.Background(), "u1", Add, siteIDs(1, 2))

	calls := sim.Calls()
	if len(calls) != 2 {
		t.Fatalf("got %d calls, want 2", len(calls))
	}
	guid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for i, call := range calls {
		if call.UserAgent != testUserAgent {
			t.Errorf("call %d: User-Agent = %q, want %q", i, call.UserAgent, testUserAgent)
		}
		if !guid.MatchString(call.ClientRequestID) {
			t.Errorf("call %d: client-request-id = %q, want a GUID", i, call.ClientRequestID)
		}
	}
	if calls[0].ClientRequestID == calls[1].ClientRequestID {
		t.Errorf("client-request-id %q reused across attempts", calls[0].ClientRequestID)
	}
}

func TestApplyConcurrentUsersShareToken(t *testing.T) {
	sim := newSim(t)
	c := newSimClient(t, sim, nil)
	var wg sync.WaitGroup
	results := make([][]SiteResult, 8)
	for i := range results {
		wg.Go(func() {
			results[i] = c.Apply(context.Background(), "user"+string(rune('a'+i)), Add, siteIDs(i+1, i+3))
		})
	}
	wg.Wait()
	for i, got := range results {
		checkResults(t, siteIDs(i+1, i+3), got, allApplied(3))
	}
	if n := sim.TokenRequests(); n != 1 {
		t.Errorf("TokenRequests = %d, want 1", n)
	}
}

func TestCheckToken(t *testing.T) {
	sim := newSim(t)
	c := newSimClient(t, sim, nil)
	for range 2 {
		if err := c.CheckToken(context.Background()); err != nil {
			t.Fatalf("CheckToken: %v", err)
		}
	}
	if n := sim.TokenRequests(); n != 1 {
		t.Errorf("TokenRequests = %d, want 1 (cached)", n)
	}
	if scopes := sim.TokenScopes(); len(scopes) != 1 || !strings.Contains(scopes[0], sim.GraphURL()+"/.default") {
		t.Errorf("token scopes = %v, want %s/.default", scopes, sim.GraphURL())
	}

	cred, err := NewCredential(CredentialConfig{
		TenantID:      sim.TenantID(),
		ClientID:      sim.ClientID(),
		ClientSecret:  "not-the-secret-4711",
		AuthorityHost: sim.AuthorityURL(),
		HTTPClient:    sim.HTTPClient(),
	})
	if err != nil {
		t.Fatalf("NewCredential: %v", err)
	}
	bad, err := New(testConfig(t, sim.GraphURL(), cred, nil))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	err = bad.CheckToken(context.Background())
	if err == nil || !strings.Contains(err.Error(), "check token") {
		t.Fatalf("CheckToken with a wrong secret = %v, want an error", err)
	}
	got := bad.Apply(context.Background(), "u1", Add, []string{siteID(1)})
	checkResults(t, []string{siteID(1)}, got, []want{{outcome: Unresolved, code: CodeTokenUnavailable}})
	if got[0].Attempts != 0 {
		t.Errorf("attempts = %d, want 0", got[0].Attempts)
	}
	if strings.Contains(got[0].Err.Message, "not-the-secret-4711") {
		t.Errorf("error message leaks the secret: %s", got[0].Err.Message)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	cred := &countingCredential{}
	tests := []struct {
		name    string
		baseURL string
		noCred  bool
		wantErr string // "" for success
	}{
		{name: "https", baseURL: "https://graph.microsoft.com"},
		{name: "https trailing slash", baseURL: "https://graph.microsoft.us/"},
		{name: "http loopback v4", baseURL: "http://127.0.0.1:8080"},
		{name: "http loopback 127/8", baseURL: "http://127.1.2.3:8080"},
		{name: "http loopback v6", baseURL: "http://[::1]:8080"},
		{name: "http localhost", baseURL: "http://localhost:8080"},
		{name: "http remote", baseURL: "http://graph.microsoft.com", wantErr: "http://graph.microsoft.com"},
		{name: "http loopback-looking name", baseURL: "http://127.0.0.1.nip.io", wantErr: "http://127.0.0.1.nip.io"},
		{name: "http private address", baseURL: "http://10.0.0.1", wantErr: "http://10.0.0.1"},
		{name: "other scheme", baseURL: "ftp://graph.microsoft.com", wantErr: "ftp://graph.microsoft.com"},
		{name: "no host", baseURL: "https://", wantErr: "https://"},
		{name: "empty", baseURL: "", wantErr: "base URL is required"},
		{name: "credentials", baseURL: "https://alice:hunter2@graph.microsoft.com", wantErr: `"https://redacted@graph.microsoft.com" must be`},
		{name: "token", baseURL: "https://hunter2@graph.microsoft.com", wantErr: `"https://redacted@graph.microsoft.com" must be`},
		{name: "unparsable with credentials", baseURL: "https://alice:hunter2@graph.microsoft.com:port", wantErr: `"[unparsable URL]": invalid port`},
		{name: "no credential", baseURL: "https://graph.microsoft.com", noCred: true, wantErr: "credential"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{BaseURL: tt.baseURL, Credential: cred}
			if tt.noCred {
				cfg.Credential = nil
			}
			c, err := New(cfg)
			if tt.wantErr == "" {
				if err != nil || c == nil {
					t.Fatalf("New(%q) = %v, want a client", tt.baseURL, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New(%q) error = %v, want one naming %q", tt.baseURL, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("New(%q) error = %v, shows the credentials", tt.baseURL, err)
			}
			if tt.noCred && !errors.Is(err, errNoCredential) {
				t.Errorf("error %v is not errNoCredential", err)
			}
		})
	}
}

// Every Apply against the sim must agree with the sim's state: Applied only
// for what the sim really followed, across mixed faults.
func TestApplyNeverClaimsUnconfirmedSites(t *testing.T) {
	sim := newSim(t)
	c := newSimClient(t, sim, func(cfg *Config) { cfg.MaxAttempts = 2 })
	sim.OmitSite(siteID(1), 5)
	sim.FailSite(siteID(2), "activityLimitReached", 5)
	sim.FailSite(siteID(3), "accessDenied", 1)
	sim.ExtraErrorEntry(true)
	sim.UpperCaseIDs(true)
	ids := append(siteIDs(1, 6), unknownSite)

	got := c.Apply(context.Background(), "u1", Add, ids)

	followed := sim.Followed("u1")
	for _, r := range got {
		isFollowed := slices.Contains(followed, strings.ToLower(r.SiteID))
		if (r.Outcome == Applied) != isFollowed {
			t.Errorf("%s: outcome %v but followed=%v", r.SiteID, r.Outcome, isFollowed)
		}
	}
	checkResults(t, ids, got, []want{
		{outcome: Unresolved, code: CodeUnconfirmed},
		{outcome: Unresolved, code: "activityLimitReached"},
		{outcome: Rejected, code: "accessDenied"},
		{outcome: Applied}, {outcome: Applied}, {outcome: Applied},
		{outcome: Rejected, code: "invalidRequest"},
	})
}
