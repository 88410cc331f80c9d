package graphclient

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// The tests in this file use a scripted Graph (a hand-written httptest
// handler) for answers graphsim does not produce.

// seen is one request as the scripted Graph received it.
type seen struct {
	at     time.Time
	method string
	path   string // escaped
	header http.Header
	ids    []string
	body   string
}

// answer writes one scripted response; it gets the requested ids.
type answer func(w http.ResponseWriter, ids []string)

// scriptedGraph answers the i-th request with answers[i] (the last one
// repeats) and records every request.
type scriptedGraph struct {
	*httptest.Server
	mu      sync.Mutex
	answers []answer
	reqs    []seen
}

func newScriptedGraph(t *testing.T, answers ...answer) *scriptedGraph {
	t.Helper()
	g := &scriptedGraph{answers: answers}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read request body: %v", err)
			return
		}
		var body struct {
			Value []struct {
				ID string `json:"id"`
			} `json:"value"`
		}
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Errorf("request body %q: %v", raw, err)
		}
		var ids []string
		for _, v := range body.Value {
			ids = append(ids, v.ID)
		}
		g.mu.Lock()
		g.reqs = append(g.reqs, seen{at: time.Now(), method: r.Method, path: r.URL.EscapedPath(), header: r.Header.Clone(), ids: ids, body: string(raw)})
		a := g.answers[min(len(g.reqs), len(g.answers))-1]
		g.mu.Unlock()
		w.Header().Set("request-id", fmt.Sprintf("req-%d", len(ids)))
		a(w, ids)
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *scriptedGraph) requests() []seen {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.reqs)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		panic(err) // the test client went away; nothing sensible to do
	}
}

// followAll answers 200 with a success entry per requested id.
func followAll(w http.ResponseWriter, ids []string) {
	var v []map[string]string
	for _, id := range ids {
		v = append(v, map[string]string{"id": id, "name": "site"})
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": v})
}

// followFirst answers 200 listing only the first requested id.
func followFirst(w http.ResponseWriter, ids []string) { followAll(w, ids[:1]) }

func status(code int, header ...string) answer {
	return func(w http.ResponseWriter, _ []string) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
	}
}

func graphErr(code int, errCode string, header ...string) answer {
	return func(w http.ResponseWriter, _ []string) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		writeJSON(w, code, map[string]any{"error": map[string]any{
			"code": errCode, "message": "scripted " + errCode,
			"innerError": map[string]string{"request-id": "inner-req", "date": "2024-01-01T00:00:00"},
		}})
	}
}

func rawBody(code int, body string) answer {
	return func(w http.ResponseWriter, _ []string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		if _, err := io.WriteString(w, body); err != nil {
			panic(err)
		}
	}
}

// dropConnection closes the connection without an answer.
func dropConnection(w http.ResponseWriter, _ []string) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	if err := conn.Close(); err != nil {
		panic(err)
	}
}

func newScriptedClient(t *testing.T, g *scriptedGraph, cred *countingCredential, edit func(*Config)) *Client {
	t.Helper()
	c, err := New(testConfig(t, g.URL, cred, edit))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func TestRequestShape(t *testing.T) {
	g := newScriptedGraph(t, followAll)
	cred := &countingCredential{}
	c := newScriptedClient(t, g, cred, nil)
	ids := siteIDs(1, 2)

	got := c.Apply(context.Background(), "adele@contoso.com", Add, ids)

	checkResults(t, ids, got, allApplied(2))
	reqs := g.requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.method != http.MethodPost || r.path != "/v1.0/users/adele@contoso.com/followedSites/add" {
		t.Errorf("request = %s %s", r.method, r.path)
	}
	wantBody := `{"value":[{"id":"` + ids[0] + `"},{"id":"` + ids[1] + `"}]}`
	if r.body != wantBody {
		t.Errorf("body = %s, want %s", r.body, wantBody)
	}
	for h, want := range map[string]string{
		"Authorization": "Bearer fake-token-1",
		"Content-Type":  "application/json",
		"Accept":        "application/json",
		"User-Agent":    testUserAgent,
	} {
		if got := r.header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	if r.header.Get("client-request-id") == "" {
		t.Errorf("no client-request-id")
	}

	c.Apply(context.Background(), "adele@contoso.com", Remove, ids)
	if p := g.requests()[1].path; p != "/v1.0/users/adele@contoso.com/followedSites/remove" {
		t.Errorf("remove path = %s", p)
	}
}

func TestEscapedUserIDIsOneSegment(t *testing.T) {
	g := newScriptedGraph(t, followAll)
	c := newScriptedClient(t, g, &countingCredential{}, nil)
	tests := []struct {
		user, wantSegment string
	}{
		{"a/b", "a%2Fb"},
		{"../../me", "..%2F..%2Fme"},
		{"x%2Fy", "x%252Fy"},
		{"a?b#c", "a%3Fb%23c"},
	}
	for i, tt := range tests {
		c.Apply(context.Background(), tt.user, Add, []string{siteID(1)})
		want := "/v1.0/users/" + tt.wantSegment + "/followedSites/add"
		if got := g.requests()[i].path; got != want {
			t.Errorf("user %q: path = %s, want %s", tt.user, got, want)
		}
	}
}

// A 200 that leaves out a requested site proves nothing about it.
func TestAdd200OmissionResent(t *testing.T) {
	g := newScriptedGraph(t, followFirst, followAll)
	c := newScriptedClient(t, g, &countingCredential{}, nil)
	ids := siteIDs(1, 3)

	got := c.Apply(context.Background(), "u1", Add, ids)

	checkResults(t, ids, got, []want{{outcome: Applied, attempts: 1}, {outcome: Applied, attempts: 2}, {outcome: Applied, attempts: 2}})
	reqs := g.requests()
	if len(reqs) != 2 || !slices.Equal(reqs[1].ids, siteIDs(2, 3)) {
		t.Fatalf("requests = %+v, want a re-send of sites 2 and 3", reqs)
	}
}

func TestWholeCallAnswers(t *testing.T) {
	tests := []struct {
		name      string
		op        Operation
		answers   []answer
		want      want
		wantCalls int
	}{
		// Both sites: the call, then each alone (see TestApplyBisectsWholeCall400).
		{name: "400 rejected", op: Add, answers: []answer{graphErr(400, "invalidRequest")}, want: want{outcome: Rejected, code: "invalidRequest", status: 400, attempts: 2}, wantCalls: 3},
		{name: "403 rejected", op: Remove, answers: []answer{graphErr(403, "accessDenied")}, want: want{outcome: Rejected, code: "accessDenied", status: 403}, wantCalls: 1},
		{name: "403 without body", op: Add, answers: []answer{status(403)}, want: want{outcome: Rejected, code: "httpStatus403", status: 403}, wantCalls: 1},
		{name: "409 rejected", op: Add, answers: []answer{rawBody(409, "not json")}, want: want{outcome: Rejected, code: "httpStatus409", status: 409}, wantCalls: 1},
		{name: "500 retried", op: Add, answers: []answer{graphErr(500, "generalException"), followAll}, want: want{outcome: Applied, attempts: 2}, wantCalls: 2},
		{name: "509 retried", op: Remove, answers: []answer{status(509), status(204)}, want: want{outcome: Applied, attempts: 2}, wantCalls: 2},
		{name: "509 exhausted", op: Remove, answers: []answer{status(509)}, want: want{outcome: Unresolved, code: CodeThrottled, status: 509, attempts: 3}, wantCalls: 3},
		{name: "dropped connection retried", op: Add, answers: []answer{dropConnection, followAll}, want: want{outcome: Applied, attempts: 2}, wantCalls: 2},
		{name: "dropped connection exhausted", op: Add, answers: []answer{dropConnection}, want: want{outcome: Unresolved, code: CodeNetworkError, status: 0, attempts: 3}, wantCalls: 3},
		{name: "invalid json retried", op: Add, answers: []answer{rawBody(200, `{"value":[`), followAll}, want: want{outcome: Applied, attempts: 2}, wantCalls: 2},
		{name: "invalid json exhausted", op: Add, answers: []answer{rawBody(207, `<html>`)}, want: want{outcome: Unresolved, code: CodeInvalidResponse, status: 207}, wantCalls: 3},
		{name: "add 204 unconfirmed", op: Add, answers: []answer{status(204)}, want: want{outcome: Unresolved, code: CodeUnconfirmed, status: 204, attempts: 3}, wantCalls: 3},
		{name: "remove 207 empty", op: Remove, answers: []answer{rawBody(207, `{"value":[]}`)}, want: want{outcome: Applied, attempts: 1}, wantCalls: 1},
		{name: "redirect not followed", op: Add, answers: []answer{status(307, "Location", "https://elsewhere.example/")}, want: want{outcome: Unresolved, code: "httpStatus307", status: 307}, wantCalls: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newScriptedGraph(t, tt.answers...)
			c := newScriptedClient(t, g, &countingCredential{}, func(cfg *Config) { cfg.MaxAttempts = 3 })
			ids := siteIDs(1, 2)

			got := c.Apply(context.Background(), "u1", tt.op, ids)

			checkResults(t, ids, got, []want{tt.want, tt.want})
			if n := len(g.requests()); n != tt.wantCalls {
				t.Errorf("got %d calls, want %d", n, tt.wantCalls)
			}
		})
	}
}

func TestWholeCallErrorCarriesRequestIDs(t *testing.T) {
	g := newScriptedGraph(t, graphErr(403, "accessDenied"))
	c := newScriptedClient(t, g, &countingCredential{}, nil)

	got := c.Apply(context.Background(), "ghost", Add, []string{siteID(1)})

	e := got[0].Err
	if e == nil || e.RequestID != "req-1" || e.ClientRequestID != g.requests()[0].header.Get("client-request-id") || e.Message != "scripted accessDenied" {
		t.Errorf("err = %+v, want the answer's request-id, our client-request-id and the message", e)
	}
}

// Retry-After and RateLimit-Reset: the larger wins, and the wait holds the
// next call back (a 503 pauses the app as a 429 does).
func TestThrottleHeaders(t *testing.T) {
	tests := []struct {
		name    string
		first   answer
		minWait time.Duration
	}{
		{name: "RateLimit-Reset larger", first: graphErr(429, "TooManyRequests", "Retry-After", "0.1", "RateLimit-Reset", "1"), minWait: time.Second},
		{name: "Retry-After larger", first: graphErr(429, "TooManyRequests", "Retry-After", "0.6", "RateLimit-Reset", "0"), minWait: 600 * time.Millisecond},
		{name: "503 Retry-After", first: graphErr(503, "serviceNotAvailable", "Retry-After", "0.5"), minWait: 500 * time.Millisecond},
		{name: "fractional", first: status(429, "Retry-After", "0.128"), minWait: 128 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newScriptedGraph(t, tt.first, followAll)
			c := newScriptedClient(t, g, &countingCredential{}, nil)

			got := c.Apply(context.Background(), "u1", Add, []string{siteID(1)})

			checkResults(t, []string{siteID(1)}, got, []want{{outcome: Applied, attempts: 2}})
			reqs := g.requests()
			if len(reqs) != 2 {
				t.Fatalf("got %d requests, want 2", len(reqs))
			}
			if notBefore := reqs[0].at.Add(tt.minWait); reqs[1].at.Before(notBefore) {
				t.Errorf("second call at %v, before %v", reqs[1].at, notBefore)
			}
		})
	}
}

func TestPersistent401IsUnresolved(t *testing.T) {
	g := newScriptedGraph(t, graphErr(401, "InvalidAuthenticationToken"))
	cred := &countingCredential{}
	c := newScriptedClient(t, g, cred, nil)

	got := c.Apply(context.Background(), "u1", Add, siteIDs(1, 2))

	w := want{outcome: Unresolved, code: CodeUnauthenticated, status: 401, attempts: 2}
	checkResults(t, siteIDs(1, 2), got, []want{w, w})
	reqs := g.requests()
	if len(reqs) != 2 {
		t.Fatalf("got %d requests, want 2 (one retry with a fresh token)", len(reqs))
	}
	if a, b := reqs[0].header.Get("Authorization"), reqs[1].header.Get("Authorization"); a == b {
		t.Errorf("retry reused the rejected token %q", a)
	}
	calls, claims := cred.snapshot()
	if calls != 2 || claims[0] != "" || !strings.Contains(claims[1], `"nbf"`) {
		t.Errorf("credential calls = %d with claims %q, want a plain request then one bypassing the cache", calls, claims)
	}
}

func TestClaimsChallengeForwarded(t *testing.T) {
	challenge := `{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}`
	header := `Bearer realm="", error="insufficient_claims", claims="` + base64.StdEncoding.EncodeToString([]byte(challenge)) + `"`
	g := newScriptedGraph(t, graphErr(401, "InvalidAuthenticationToken", "WWW-Authenticate", header), followAll)
	cred := &countingCredential{}
	c := newScriptedClient(t, g, cred, nil)

	got := c.Apply(context.Background(), "u1", Add, []string{siteID(1)})

	checkResults(t, []string{siteID(1)}, got, []want{{outcome: Applied, attempts: 2}})
	if _, claims := cred.snapshot(); len(claims) != 2 || claims[1] != challenge {
		t.Errorf("claims = %q, want the decoded challenge second", claims)
	}
}

// Each HTTP call yields exactly one log line with the call's facts, and the
// token never appears.
func TestOneLogLinePerCall(t *testing.T) {
	extra := func(w http.ResponseWriter, ids []string) {
		writeJSON(w, http.StatusMultiStatus, map[string]any{"value": []any{
			map[string]any{"id": ids[0]},
			map[string]any{"id": unknownSite, "error": map[string]string{"code": "invalidRequest", "message": "x"}},
			map[string]any{"id": ids[1], "error": map[string]string{"code": "activityLimitReached", "message": "x"}},
		}})
	}
	g := newScriptedGraph(t, graphErr(429, "TooManyRequests", "Retry-After", "0"), extra, followAll)
	var buf syncBuffer
	c := newScriptedClient(t, g, &countingCredential{}, func(cfg *Config) { cfg.Logger = zerolog.New(&buf) })

	got := c.Apply(context.Background(), "u1", Add, siteIDs(1, 2))

	checkResults(t, siteIDs(1, 2), got, allApplied(2))
	out := buf.String()
	if strings.Contains(out, "fake-token") {
		t.Errorf("log contains a token: %s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	reqs := g.requests()
	if len(lines) != len(reqs) {
		t.Fatalf("got %d log lines for %d calls:\n%s", len(lines), len(reqs), out)
	}
	wantStatus := []string{"429", "207", "200"}
	wantSites := []float64{2, 2, 1}
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		for _, k := range []string{"user", "operation", "sites", "status", "durationMs", "request_id", "client_request_id", "attempt"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("line %d lacks %q: %s", i, k, line)
			}
		}
		if rec["status"] != wantStatus[i] || rec["sites"] != wantSites[i] || rec["user"] != "u1" || rec["operation"] != "add" {
			t.Errorf("line %d = %s, want status %s, %v sites", i, line, wantStatus[i], wantSites[i])
		}
		if rec["client_request_id"] != reqs[i].header.Get("client-request-id") {
			t.Errorf("line %d client_request_id = %v, want %s", i, rec["client_request_id"], reqs[i].header.Get("client-request-id"))
		}
	}
	if !strings.Contains(lines[1], unknownSite) {
		t.Errorf("the 207's unrequested id is not logged: %s", lines[1])
	}
	// The throttle's line says what it asked for; the others carry no
	// Retry-After.
	if !strings.Contains(lines[0], `"retryAfter":"0s"`) {
		t.Errorf("the 429's line lacks its Retry-After: %s", lines[0])
	}
	if strings.Contains(lines[2], "retryAfter") {
		t.Errorf("a 200's line carries a Retry-After: %s", lines[2])
	}
}

func TestMetrics(t *testing.T) {
	g := newScriptedGraph(t, graphErr(429, "TooManyRequests", "Retry-After", "0.05"), followFirst, followAll)
	reg := prometheus.NewRegistry()
	c := newScriptedClient(t, g, &countingCredential{}, func(cfg *Config) { cfg.Metrics = NewMetrics(reg) })

	checkResults(t, siteIDs(1, 3), c.Apply(context.Background(), "u1", Add, siteIDs(1, 3)), allApplied(3))

	values, hists := gather(t, reg)
	if got, want := values["sitefollow_graph_calls_total"], map[string]float64{"operation=add,status=429": 1, "operation=add,status=200": 2}; !maps.Equal(got, want) {
		t.Errorf("calls_total = %v, want %v", got, want)
	}
	if got, want := values["sitefollow_graph_retries_total"], map[string]float64{"operation=add,reason=throttled": 1, "operation=add,reason=unconfirmed": 1}; !maps.Equal(got, want) {
		t.Errorf("retries_total = %v, want %v", got, want)
	}
	if h := hists["sitefollow_graph_sites_per_call"]; h != [2]float64{3, 3 + 3 + 2} {
		t.Errorf("sites_per_call count/sum = %v, want [3 8]", h)
	}
	if n := hists["sitefollow_graph_call_duration_seconds"][0]; n != 3 {
		t.Errorf("call_duration count = %v, want 3", n)
	}
	if v := values["sitefollow_graph_inflight"][""]; v != 0 {
		t.Errorf("inflight = %v, want 0", v)
	}
	if v := values["sitefollow_graph_throttle_wait_seconds_total"][""]; v < 0.05 {
		t.Errorf("throttle_wait = %v, want at least the 0.05s Retry-After", v)
	}
}

// A per-site error whose detailed (inner) code is transient is retried too.
func TestSiteErrorInnerCodeTransient(t *testing.T) {
	first := func(w http.ResponseWriter, ids []string) {
		writeJSON(w, http.StatusMultiStatus, map[string]any{"value": []any{
			map[string]any{"id": strings.ToUpper(ids[0])},
			map[string]any{"id": ids[1], "error": map[string]any{
				"code": "unknownError", "message": "x",
				"innerError": map[string]any{"code": "x", "innerError": map[string]any{"code": "ActivityLimitReached"}},
			}},
		}})
	}
	g := newScriptedGraph(t, first, followAll)
	c := newScriptedClient(t, g, &countingCredential{}, nil)

	got := c.Apply(context.Background(), "u1", Add, siteIDs(1, 2))

	checkResults(t, siteIDs(1, 2), got, []want{{outcome: Applied, attempts: 1}, {outcome: Applied, attempts: 2}})
	if reqs := g.requests(); len(reqs) != 2 || !slices.Equal(reqs[1].ids, []string{siteID(2)}) {
		t.Errorf("requests = %+v, want a re-send of site 2 alone", reqs)
	}
}

// TestRetryAfterBounded holds every form of Retry-After and RateLimit-Reset
// to the bounds: the app-wide gate closes for MaxRetryAfter at most, so
// another user's call still goes out, and the pause reported for
// redelivery is at most a day, however far ahead Graph's value points.
func TestRetryAfterBounded(t *testing.T) {
	const maxRetryAfter = 500 * time.Millisecond
	tenYears := 10 * 365 * 24 * time.Hour
	date := func() string { return time.Now().Add(tenYears).UTC().Format(http.TimeFormat) }
	secs := strconv.FormatInt(int64(tenYears/time.Second), 10)
	tests := []struct {
		name  string
		first answer
	}{
		{name: "Retry-After HTTP date", first: func(w http.ResponseWriter, ids []string) { status(429, "Retry-After", date())(w, ids) }},
		{name: "Retry-After seconds", first: status(429, "Retry-After", secs)},
		{name: "RateLimit-Reset seconds", first: status(429, "Retry-After", "1", "RateLimit-Reset", secs)},
		{name: "RateLimit-Reset HTTP date", first: func(w http.ResponseWriter, ids []string) { status(429, "RateLimit-Reset", date())(w, ids) }},
		{name: "503 Retry-After HTTP date", first: func(w http.ResponseWriter, ids []string) {
			graphErr(503, "serviceNotAvailable", "Retry-After", date())(w, ids)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := newScriptedGraph(t, tt.first, followAll)
			c := newScriptedClient(t, g, &countingCredential{}, func(cfg *Config) { cfg.MaxRetryAfter = maxRetryAfter })

			got := c.Apply(context.Background(), "u1", Add, []string{siteID(1)})
			if got[0].Outcome != Unresolved || got[0].Err == nil {
				t.Fatalf("first user: got %v %+v, want unresolved with an error", got[0].Outcome, got[0].Err)
			}
			if ra := got[0].Err.RetryAfter; ra <= maxRetryAfter || ra > maxParsedRetryAfter {
				t.Errorf("reported RetryAfter: got %v, want more than %v and at most %v", ra, maxRetryAfter, maxParsedRetryAfter)
			}
			if until, latest := c.ThrottledUntil(), time.Now().Add(maxRetryAfter); until.After(latest) {
				t.Errorf("gate closed until %v, want no later than %v (MaxRetryAfter from now)", until, latest)
			}
			// Another user's call waits out the gate and goes out.
			got = c.Apply(context.Background(), "u2", Add, []string{siteID(2)})
			checkResults(t, []string{siteID(2)}, got, []want{{outcome: Applied, attempts: 1}})
		})
	}
}

// TestUnrequestedIDsKeepTheLogLineBounded: a 207 listing 100,000 ids nobody
// asked for, some of them long, still logs one line of at most 64 KiB.
func TestUnrequestedIDsKeepTheLogLineBounded(t *testing.T) {
	flood := func(w http.ResponseWriter, ids []string) {
		value := []any{map[string]any{"id": ids[0]}}
		for i := range 100_000 {
			id := fmt.Sprintf("u%d", i)
			if i%1000 == 0 {
				id += strings.Repeat("z", 10_000) // a long one now and then
			}
			value = append(value, map[string]any{"id": id})
		}
		writeJSON(w, http.StatusMultiStatus, map[string]any{"value": value})
	}
	g := newScriptedGraph(t, flood)
	var buf syncBuffer
	c := newScriptedClient(t, g, &countingCredential{}, func(cfg *Config) {
		cfg.Logger = zerolog.New(&buf)
		// Room for the flood, which is about the log line, not the bound.
		cfg.MaxResponseBytes = 8 << 20
	})
	c.Apply(context.Background(), "u1", Add, siteIDs(1, 1))
	for i, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if len(line) > 64<<10 {
			t.Errorf("log line %d: got %d bytes, want at most %d", i, len(line), 64<<10)
		}
		if !strings.Contains(line, `"unrequested":100000`) {
			t.Errorf("log line %d does not count the unrequested ids: %.300s", i, line)
		}
	}
}
