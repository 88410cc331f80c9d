package graphclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// batchCall is one Apply a JSON batching test makes concurrently.
type batchCall struct {
	user  string
	op    Operation
	sites []string
	want  []want
}

// newBatchingClient is a sim client with JSON batching on whose envelopes
// go out exactly when seal says (the linger is too long to matter).
func newBatchingClient(t *testing.T, sim *graphsim.Server, seal func(n int) bool, edit func(*Config)) *Client {
	t.Helper()
	c := newSimClient(t, sim, func(cfg *Config) {
		cfg.JSONBatch = true
		cfg.JSONBatchLinger = time.Minute
		if edit != nil {
			edit(cfg)
		}
	})
	if c.batcher == nil {
		t.Fatal("JSONBatch set, yet the client has no batcher")
	}
	c.batcher.sealAt = seal
	// Unpaced: the slow start would leave no call to wait for.
	c.batcher.pace = func() float64 { return math.Inf(1) }
	// One token for all: calls with different tokens never share an
	// envelope.
	if err := c.CheckToken(context.Background()); err != nil {
		t.Fatalf("CheckToken: %v", err)
	}
	return c
}

// applyAll runs calls concurrently and checks each one's results.
func applyAll(t *testing.T, c *Client, calls []batchCall) {
	t.Helper()
	got := make([][]SiteResult, len(calls))
	var wg sync.WaitGroup
	for i, bc := range calls {
		wg.Go(func() { got[i] = c.Apply(context.Background(), bc.user, bc.op, bc.sites) })
	}
	wg.Wait()
	for i, bc := range calls {
		checkResults(t, bc.sites, got[i], bc.want)
	}
}

// byHTTPRequest groups the sim's calls by the HTTP request that carried
// them, in order of arrival.
func byHTTPRequest(calls []graphsim.Call) [][]graphsim.Call {
	var order []int
	groups := map[int][]graphsim.Call{}
	for _, c := range calls {
		if _, ok := groups[c.HTTPRequest]; !ok {
			order = append(order, c.HTTPRequest)
		}
		groups[c.HTTPRequest] = append(groups[c.HTTPRequest], c)
	}
	out := make([][]graphsim.Call, 0, len(order))
	for _, h := range order {
		out = append(out, groups[h])
	}
	return out
}

// callsOf is the sim's calls for user, in arrival order.
func callsOf(calls []graphsim.Call, user string) []graphsim.Call {
	var out []graphsim.Call
	for _, c := range calls {
		if c.UserID == user {
			out = append(out, c)
		}
	}
	return out
}

// TestJSONBatchMixedEnvelope sends three users' calls in one envelope,
// answered 207 (one site refused), 429 with Retry-After and 204: each is
// settled as a direct call would be, and only the throttled one is sent
// again, alone and not before its Retry-After.
func TestJSONBatchMixedEnvelope(t *testing.T) {
	t.Parallel()
	sim := newSim(t)
	sim.ThrottleUser("bob", 1, "1")
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	var sealed bool
	c := newBatchingClient(t, sim, func(n int) bool {
		// The first envelope waits for the three calls; later ones (the
		// retry) go at once.
		sealed = sealed || n >= 3
		return sealed
	}, func(cfg *Config) { cfg.Logger, cfg.Metrics = zerolog.New(logs), NewMetrics(reg) })
	unknown := siteID(99)
	applyAll(t, c, []batchCall{
		{user: "alice", op: Add, sites: []string{siteID(1), unknown},
			want: []want{{outcome: Applied, attempts: 1}, {outcome: Rejected, code: "invalidRequest", status: http.StatusMultiStatus, attempts: 1}}},
		{user: "bob", op: Add, sites: []string{siteID(2)}, want: []want{{outcome: Applied, attempts: 2}}},
		{user: "carol", op: Remove, sites: []string{siteID(3)}, want: []want{{outcome: Applied, attempts: 1}}},
	})

	calls := sim.Calls()
	groups := byHTTPRequest(calls)
	if got, want := sim.HTTPRequests(), 2; got != want {
		t.Fatalf("HTTP requests = %d, want %d (one envelope, one retry); %d calls", got, want, len(calls))
	}
	if got, want := len(groups[0]), 3; got != want {
		t.Fatalf("first HTTP request carried %d calls, want %d", got, want)
	}
	statuses := map[string]int{}
	for _, call := range groups[0] {
		statuses[call.UserID] = call.Status
		if call.BatchItemID == "" {
			t.Errorf("call %+v of the envelope has no batch item id", call)
		}
	}
	wantStatuses := map[string]int{"alice": http.StatusMultiStatus, "bob": http.StatusTooManyRequests, "carol": http.StatusNoContent}
	if fmt.Sprint(statuses) != fmt.Sprint(wantStatuses) {
		t.Errorf("inner statuses = %v, want %v", statuses, wantStatuses)
	}
	for user, want := range map[string]int{"alice": 1, "bob": 2, "carol": 1} {
		if got := len(callsOf(calls, user)); got != want {
			t.Errorf("calls for %s = %d, want %d", user, got, want)
		}
	}
	bob := callsOf(calls, "bob")
	if len(bob) == 2 {
		if len(groups[1]) != 1 || groups[1][0].UserID != "bob" {
			t.Errorf("retry HTTP request carried %+v, want bob's call alone", groups[1])
		}
		if bob[1].Early || bob[1].At.Before(bob[0].NotBefore) {
			t.Errorf("bob's retry arrived at %v, before the inner Retry-After ended at %v", bob[1].At, bob[0].NotBefore)
		}
	}
	if got, want := strings.Count(logs.String(), `"batch_size":3`), 3; got != want {
		t.Errorf("log lines with batch_size 3 = %d, want %d:\n%s", got, want, logs)
	}
	values, counts := gather(t, reg)
	if got, want := values["sitefollow_graph_http_requests_total"], map[string]float64{"kind=batch": 1, "kind=direct": 1}; !maps.Equal(got, want) {
		t.Errorf("http_requests_total = %v, want %v", got, want)
	}
	if got, want := values["sitefollow_graph_calls_total"], map[string]float64{
		"operation=add,status=207": 1, "operation=add,status=429": 1, "operation=remove,status=204": 1, "operation=add,status=200": 1,
	}; !maps.Equal(got, want) {
		t.Errorf("calls_total = %v, want %v", got, want)
	}
	if got := counts["sitefollow_graph_batch_requests"]; got != [2]float64{1, 3} {
		t.Errorf("batch_requests count/sum = %v, want one envelope of 3", got)
	}
	if v := values["sitefollow_graph_inflight"][""]; v != 0 {
		t.Errorf("inflight = %v, want 0", v)
	}
}

// gather flattens reg's counters and gauges to name → labels → value, and
// its histograms to name → {count, sum}.
func gather(t *testing.T, reg *prometheus.Registry) (map[string]map[string]float64, map[string][2]float64) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	values := map[string]map[string]float64{}
	hists := map[string][2]float64{}
	for _, f := range families {
		values[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			var parts []string
			for _, l := range m.GetLabel() {
				parts = append(parts, l.GetName()+"="+l.GetValue())
			}
			key := strings.Join(parts, ",")
			switch {
			case m.GetCounter() != nil:
				values[f.GetName()][key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				values[f.GetName()][key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				h := hists[f.GetName()]
				hists[f.GetName()] = [2]float64{h[0] + float64(m.GetHistogram().GetSampleCount()), h[1] + m.GetHistogram().GetSampleSum()}
			}
		}
	}
	return values, hists
}

// TestJSONBatchEnvelopeFailure fails the envelope whole: every call in it
// gets what a direct call would have got and is sent again.
func TestJSONBatchEnvelopeFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		fail   func(sim *graphsim.Server)
		tokens int // token requests after the warm-up, at least
	}{
		{name: "503", fail: func(sim *graphsim.Server) { sim.FailBatch(1, http.StatusServiceUnavailable, "") }},
		{name: "429 with Retry-After", fail: func(sim *graphsim.Server) { sim.FailBatch(1, http.StatusTooManyRequests, "0.2") }},
		{name: "401 revoked token", fail: func(sim *graphsim.Server) { sim.RevokeTokens() }, tokens: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := newSim(t)
			c := newBatchingClient(t, sim, func(n int) bool { return n >= 3 }, nil)
			sim.Reset()
			tt.fail(sim)
			applyAll(t, c, []batchCall{
				{user: "u1", op: Add, sites: []string{siteID(1)}, want: []want{{outcome: Applied, attempts: 2}}},
				{user: "u2", op: Add, sites: []string{siteID(2)}, want: []want{{outcome: Applied, attempts: 2}}},
				{user: "u3", op: Remove, sites: []string{siteID(3)}, want: []want{{outcome: Applied, attempts: 2}}},
			})
			if got, want := sim.HTTPRequests(), 2; got != want {
				t.Errorf("HTTP requests = %d, want %d (the failed envelope, then one with all three)", got, want)
			}
			if got := len(byHTTPRequest(sim.Calls())); got != 1 {
				t.Errorf("envelopes with calls = %d, want 1", got)
			}
			if got := sim.TokenRequests(); got < tt.tokens {
				t.Errorf("token requests = %d, want at least %d", got, tt.tokens)
			}
		})
	}
}

// TestJSONBatchAtMost20 puts 25 concurrent calls in two envelopes, of 20
// and 5, ids unique in each.
func TestJSONBatchAtMost20(t *testing.T) {
	t.Parallel()
	sim := newSim(t)
	const users = 25
	joins := 0
	c := newBatchingClient(t, sim, func(int) bool {
		// Full envelopes are sealed by the batcher itself; the rest once
		// every call has joined.
		joins++
		return joins == users
	}, nil)
	calls := make([]batchCall, users)
	for i := range calls {
		calls[i] = batchCall{user: fmt.Sprintf("user-%02d", i), op: Add, sites: []string{siteID(i%20 + 1)}, want: allApplied(1)}
	}
	applyAll(t, c, calls)
	groups := byHTTPRequest(sim.Calls())
	var sizes []int
	for _, g := range groups {
		sizes = append(sizes, len(g))
		ids := map[string]bool{}
		for _, call := range g {
			k := strings.ToLower(call.BatchItemID)
			if k == "" || ids[k] {
				t.Errorf("envelope of %d: item id %q missing or repeated", len(g), call.BatchItemID)
			}
			ids[k] = true
		}
	}
	sort.Ints(sizes)
	if fmt.Sprint(sizes) != "[5 20]" {
		t.Errorf("envelope sizes = %v, want [5 20]", sizes)
	}
	if got := sim.HTTPRequests(); got != 2 {
		t.Errorf("HTTP requests = %d, want 2", got)
	}
}

// TestJSONBatchRequestShape checks the envelope on the wire: one POST to
// /v1.0/$batch whose requests have ids unique, relative urls without the
// version, and a Content-Type with every body; and the envelope's answers
// read by id in any order, an unanswered or unreadable one never taken as
// applied.
func TestJSONBatchRequestShape(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		answer string
		want   [2]want
	}{
		{name: "any order", answer: `{"responses":[{"id":"2","status":204},{"id":"1","status":204}]}`,
			want: [2]want{{outcome: Applied}, {outcome: Applied}}},
		{name: "one unanswered", answer: `{"responses":[{"id":"1","status":204},{"id":"7","status":204}]}`,
			want: [2]want{{outcome: Applied}, {outcome: Unresolved, code: CodeInvalidResponse}}},
		{name: "invalid JSON", answer: `{"responses":[`,
			want: [2]want{{outcome: Unresolved, code: CodeInvalidResponse}, {outcome: Unresolved, code: CodeInvalidResponse}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := newScriptedGraph(t, rawBody(http.StatusOK, tt.answer))
			c := newScriptedClient(t, g, &countingCredential{}, func(cfg *Config) {
				cfg.JSONBatch, cfg.JSONBatchLinger, cfg.MaxAttempts = true, time.Minute, 1
			})
			c.batcher.sealAt = func(n int) bool { return n >= 2 }
			c.batcher.pace = func() float64 { return math.Inf(1) }
			if err := c.CheckToken(context.Background()); err != nil {
				t.Fatalf("CheckToken: %v", err)
			}
			users := []string{"user/one", "user-two"}
			got := make([][]SiteResult, 2)
			var wg sync.WaitGroup
			for i, u := range users {
				wg.Go(func() { got[i] = c.Apply(context.Background(), u, Remove, []string{siteID(i + 1)}) })
			}
			wg.Wait()
			// The envelope goes out once per round; which call is "1" is up
			// to arrival order.
			var sorted [2][]SiteResult
			reqs := g.requests()
			order := envelopeUsers(t, reqs[0])
			for i, u := range users {
				for j, o := range order {
					if o == u {
						sorted[j] = got[i]
					}
				}
			}
			for j := range sorted {
				checkResults(t, []string{sorted[j][0].SiteID}, sorted[j], tt.want[j:j+1])
			}
			for _, r := range reqs {
				if r.method != http.MethodPost || r.path != "/v1.0/$batch" {
					t.Errorf("request %s %s, want POST /v1.0/$batch", r.method, r.path)
				}
			}
		})
	}
}

// envelopeUsers checks an envelope's requests and returns their users in
// id order ("1", "2", …).
func envelopeUsers(t *testing.T, r seen) []string {
	t.Helper()
	var env struct {
		Requests []struct {
			ID      string            `json:"id"`
			Method  string            `json:"method"`
			URL     string            `json:"url"`
			Headers map[string]string `json:"headers"`
			Body    json.RawMessage   `json:"body"`
		} `json:"requests"`
	}
	if err := json.Unmarshal([]byte(r.body), &env); err != nil {
		t.Fatalf("envelope %q: %v", r.body, err)
	}
	users := make([]string, len(env.Requests))
	for i, q := range env.Requests {
		if want := fmt.Sprint(i + 1); q.ID != want {
			t.Errorf("request %d: id %q, want %q", i, q.ID, want)
		}
		if q.Method != http.MethodPost {
			t.Errorf("request %d: method %q, want POST", i, q.Method)
		}
		rest, ok := strings.CutPrefix(q.URL, "/users/")
		if !ok || !strings.HasSuffix(rest, "/followedSites/remove") {
			t.Errorf("request %d: url %q, want /users/{id}/followedSites/remove", i, q.URL)
		}
		if ct := q.Headers["Content-Type"]; len(q.Body) == 0 || ct != "application/json" {
			t.Errorf("request %d: body %q with Content-Type %q, want a body with application/json", i, q.Body, ct)
		}
		user, _ := strings.CutSuffix(rest, "/followedSites/remove")
		users[i] = strings.ReplaceAll(user, "%2F", "/")
	}
	return users
}

// TestJSONBatchOff sends each call directly when batching is off, or with
// the beta API.
func TestJSONBatchOff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{name: "off", edit: func(cfg *Config) { cfg.JSONBatch = false }},
		{name: "beta API", edit: func(cfg *Config) { cfg.JSONBatch, cfg.API = true, APIBetaFollowingSites }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := newSim(t)
			c := newSimClient(t, sim, tt.edit)
			if c.batcher != nil {
				t.Fatal("client has a batcher")
			}
			calls := make([]batchCall, 3)
			for i := range calls {
				calls[i] = batchCall{user: fmt.Sprintf("u%d", i), op: Add, sites: []string{siteID(i + 1)}, want: allApplied(1)}
			}
			applyAll(t, c, calls)
			if got := sim.HTTPRequests(); got != 3 {
				t.Errorf("HTTP requests = %d, want 3", got)
			}
			for _, call := range sim.Calls() {
				if call.BatchItemID != "" {
					t.Errorf("call %+v came in a $batch", call)
				}
			}
		})
	}
}

// TestJSONBatchCallerGivesUp cancels one waiting call: it ends at once,
// and the envelope still goes out for the others.
func TestJSONBatchCallerGivesUp(t *testing.T) {
	t.Parallel()
	sim := newSim(t)
	c := newBatchingClient(t, sim, func(n int) bool { return n >= 3 }, nil)
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan []SiteResult)
	go func() { done <- c.Apply(ctx, "quitter", Add, []string{siteID(1)}) }()
	waitFor(t, "the call to join an envelope", func() bool {
		c.batcher.mu.Lock()
		defer c.batcher.mu.Unlock()
		for _, e := range c.batcher.open {
			return len(e.items) == 1
		}
		return false
	})
	cancel(errors.New("test gives up"))
	checkResults(t, []string{siteID(1)}, <-done, []want{{outcome: Unresolved, code: CodeCanceled, attempts: 1}})
	applyAll(t, c, []batchCall{
		{user: "u1", op: Add, sites: []string{siteID(2)}, want: allApplied(1)},
		{user: "u2", op: Add, sites: []string{siteID(3)}, want: allApplied(1)},
	})
	if got := sim.HTTPRequests(); got != 1 {
		t.Errorf("HTTP requests = %d, want 1", got)
	}
}

// TestJSONBatchWaitsForTheGate closes the throttle gate while an envelope
// is gathering: the envelope waits for the pause like any call.
func TestJSONBatchWaitsForTheGate(t *testing.T) {
	t.Parallel()
	sim := newSim(t)
	c := newBatchingClient(t, sim, func(int) bool { return false }, func(cfg *Config) { cfg.JSONBatchLinger = 2 * time.Second })
	done := make(chan []SiteResult)
	go func() { done <- c.Apply(context.Background(), "ann", Add, []string{siteID(1)}) }()
	waitFor(t, "the call to join an envelope", func() bool {
		c.batcher.mu.Lock()
		defer c.batcher.mu.Unlock()
		return len(c.batcher.open) == 1
	})
	const pause = 3 * time.Second
	closed := time.Now()
	c.Adopt(pause, 0)
	checkResults(t, []string{siteID(1)}, <-done, allApplied(1))
	calls := sim.Calls()
	if len(calls) != 1 {
		t.Fatalf("calls: got %d, want 1", len(calls))
	}
	if early := closed.Add(pause).Sub(calls[0].At); early > 0 {
		t.Errorf("the envelope arrived %v before the gate opened", early)
	}
}

// TestJSONBatchNoLingerWhilePaced sends a paced call's envelope at once
// when fewer than one more call is due within the linger: waiting would
// only delay it.
func TestJSONBatchNoLingerWhilePaced(t *testing.T) {
	t.Parallel()
	sim := newSim(t)
	c := newBatchingClient(t, sim, func(int) bool { return false }, func(cfg *Config) { cfg.JSONBatchLinger = time.Hour })
	// One call a day, as far as the batcher knows.
	c.batcher.pace = func() float64 { return 1.0 / (24 * 3600) }
	done := make(chan []SiteResult, 1)
	go func() { done <- c.Apply(context.Background(), "ann", Add, []string{siteID(1)}) }()
	var got []SiteResult
	waitFor(t, "the paced call's answer (not an hour's linger)", func() bool {
		select {
		case got = <-done:
			return true
		default:
			return false
		}
	})
	checkResults(t, []string{siteID(1)}, got, allApplied(1))
}
