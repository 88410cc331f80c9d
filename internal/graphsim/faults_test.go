package graphsim

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFailSite(t *testing.T) {
	tests := []struct {
		name         string
		op           string
		code         string
		n            int
		before       []string
		wantFirst    []wantEntry // entries of the first call
		wantStatus   int
		wantFollowed []string // after the first call
		wantSecond   int      // status of the same call repeated
	}{
		{
			name: "transient on add", op: "add", code: "activityLimitReached", n: 1,
			wantStatus: http.StatusMultiStatus, wantFirst: []wantEntry{{siteA, "activityLimitReached"}, {siteB, ""}},
			wantFollowed: []string{siteB}, wantSecond: http.StatusOK,
		},
		{
			name: "permanent on add twice", op: "add", code: "accessDenied", n: 2,
			wantStatus: http.StatusMultiStatus, wantFirst: []wantEntry{{siteA, "accessDenied"}, {siteB, ""}},
			wantFollowed: []string{siteB}, wantSecond: http.StatusMultiStatus,
		},
		{
			name: "on remove lists only the failure", op: "remove", code: "generalException", n: 1, before: []string{siteA, siteB},
			wantStatus: http.StatusMultiStatus, wantFirst: []wantEntry{{siteA, "generalException"}},
			wantFollowed: []string{siteA}, wantSecond: http.StatusNoContent,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{Sites: []string{siteA, siteB}})
			s.SetFollowed("u1", tc.before...)
			// Upper case on purpose: fault ids match case-insensitively.
			s.FailSite(strings.ToUpper(siteA), tc.code, tc.n)
			tok := fetchToken(t, s)
			c := call{op: tc.op, user: "u1", ids: []string{siteA, siteB}, token: tok}

			got := c.do(t, s)
			if got.status != tc.wantStatus {
				t.Fatalf("status: got %d, want %d (body %s)", got.status, tc.wantStatus, got.body)
			}
			checkEntries(t, got.entries(t), tc.wantFirst)
			if f := s.Followed("u1"); !slices.Equal(f, tc.wantFollowed) {
				t.Errorf("Followed: got %q, want %q", f, tc.wantFollowed)
			}
			if second := c.do(t, s); second.status != tc.wantSecond {
				t.Errorf("second status: got %d, want %d (body %s)", second.status, tc.wantSecond, second.body)
			}
		})
	}
}

func TestOmitSite(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA, siteB}})
	s.OmitSite(siteA, 1)
	tok := fetchToken(t, s)

	// Remove calls do not consume an omission.
	if got := (call{op: "remove", user: "u1", ids: []string{siteA}, token: tok}).do(t, s); got.status != http.StatusNoContent {
		t.Fatalf("remove status: got %d, want 204", got.status)
	}

	got := call{op: "add", user: "u1", ids: []string{siteA, siteB}, token: tok}.do(t, s)
	if got.status != http.StatusMultiStatus {
		t.Fatalf("status: got %d, want 207 (body %s)", got.status, got.body)
	}
	checkEntries(t, got.entries(t), []wantEntry{{siteB, ""}})
	if f := s.Followed("u1"); !slices.Equal(f, []string{siteB}) {
		t.Errorf("Followed: got %q, want only %q", f, siteB)
	}

	// The omission expired: the same site is now followed.
	if got := (call{op: "add", user: "u1", ids: []string{siteA}, token: tok}).do(t, s); got.status != http.StatusOK {
		t.Errorf("second add status: got %d, want 200", got.status)
	}

	// Omitting the only site still answers 207, with an empty list.
	s.OmitSite(siteB, 1)
	s.SetFollowed("u2")
	got = call{op: "add", user: "u2", ids: []string{siteB}, token: tok}.do(t, s)
	if got.status != http.StatusMultiStatus || strings.ReplaceAll(string(got.body), " ", "") != `{"value":[]}` {
		t.Errorf("all omitted: got %d %s, want 207 {\"value\":[]}", got.status, got.body)
	}
	if f := s.Followed("u2"); len(f) != 0 {
		t.Errorf("Followed(u2): got %q, want none", f)
	}
}

func TestUnknownUser(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}})
	s.UnknownUser("Ghost@contoso.com")
	tok := fetchToken(t, s)
	for _, op := range []string{"add", "remove"} {
		got := call{op: op, user: "ghost@CONTOSO.com", ids: []string{siteA}, token: tok}.do(t, s)
		if got.status != http.StatusNotFound {
			t.Fatalf("%s status: got %d, want 404", op, got.status)
		}
		e := got.wholeError(t)
		if e.Error.Code != "Request_ResourceNotFound" || e.Error.InnerError.Code != "itemNotFound" {
			t.Errorf("%s error: got code %q inner %q, want Request_ResourceNotFound/itemNotFound", op, e.Error.Code, e.Error.InnerError.Code)
		}
	}
	if got := (call{op: "add", user: "someone", ids: []string{siteA}, token: tok}).do(t, s); got.status != http.StatusOK {
		t.Errorf("other user: got %d, want 200", got.status)
	}
	s.ClearFaults()
	if got := (call{op: "add", user: "ghost@contoso.com", ids: []string{siteA}, token: tok}).do(t, s); got.status != http.StatusOK {
		t.Errorf("after ClearFaults: got %d, want 200", got.status)
	}
}

func TestUpperCaseIDs(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}})
	s.UpperCaseIDs(true)
	got := call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}.do(t, s)
	want := "contoso.sharepoint.com,DA60E844-BA1D-49BC-B4D4-D5E36BAE9019,712A596E-90A1-49E3-9B48-BFA80BEE8740"
	checkEntries(t, got.entries(t), []wantEntry{{want, ""}})
	if f := s.Followed("u1"); !slices.Equal(f, []string{siteA}) {
		t.Errorf("Followed: got %q, want canonical lower case %q", f, siteA)
	}
}

func TestExtraErrorEntry(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA, siteB}})
	s.ExtraErrorEntry(true)
	tok := fetchToken(t, s)

	if got := (call{op: "add", user: "u1", ids: []string{siteA}, token: tok}).do(t, s); got.status != http.StatusOK || len(got.entries(t)) != 1 {
		t.Errorf("all-success add: got %d %s, want 200 with one entry", got.status, got.body)
	}

	requested := []string{siteUnknown, siteB}
	got := call{op: "add", user: "u1", ids: requested, token: tok}.do(t, s)
	if got.status != http.StatusMultiStatus {
		t.Fatalf("status: got %d, want 207", got.status)
	}
	var extra []string
	for _, e := range got.entries(t) {
		if !slices.Contains(requested, e.ID) {
			if e.Error == nil {
				t.Errorf("unrequested entry %q: got success, want error", e.ID)
			}
			extra = append(extra, e.ID)
		}
	}
	if len(extra) != 1 {
		t.Errorf("unrequested entries: got %q, want exactly one", extra)
	}
	if f := s.Followed("u1"); !slices.Equal(f, []string{siteB, siteA}) {
		t.Errorf("Followed: got %q, want %q", f, []string{siteB, siteA})
	}
}

func TestUnavailable(t *testing.T) {
	tests := []struct {
		status   int
		wantCode string
	}{
		{http.StatusServiceUnavailable, "serviceNotAvailable"},
		{http.StatusGatewayTimeout, "gatewayTimeout"},
	}
	for _, tc := range tests {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			s := newSim(t, Options{Sites: []string{siteA}})
			s.Unavailable(2, tc.status)
			c := call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}
			for i := range 2 {
				got := c.do(t, s)
				if got.status != tc.status {
					t.Fatalf("call %d status: got %d, want %d", i, got.status, tc.status)
				}
				if ra := got.header.Get("Retry-After"); ra != "" {
					t.Errorf("call %d Retry-After: got %q, want none", i, ra)
				}
				if code := got.wholeError(t).Error.Code; code != tc.wantCode {
					t.Errorf("call %d code: got %q, want %q", i, code, tc.wantCode)
				}
			}
			if got := c.do(t, s); got.status != http.StatusOK {
				t.Errorf("after expiry: got %d, want 200", got.status)
			}
			if f := s.Followed("u1"); !slices.Equal(f, []string{siteA}) {
				t.Errorf("Followed: got %q, want %q", f, siteA)
			}
			if s.EarlyCalls() != 0 {
				t.Errorf("EarlyCalls: got %d, want 0 (503/504 announce nothing)", s.EarlyCalls())
			}
		})
	}
}

func TestThrottle(t *testing.T) {
	future := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	tests := []struct {
		name       string
		retryAfter string
		minWait    time.Duration // lower bound on Call.RetryAfter
		wantEarly  bool          // for the call right after the 429
	}{
		{name: "whole seconds", retryAfter: "30", minWait: 30 * time.Second, wantEarly: true},
		{name: "fractional seconds", retryAfter: "2.128", minWait: 2128 * time.Millisecond, wantEarly: true},
		{name: "http date", retryAfter: future, minWait: 50 * time.Minute, wantEarly: true},
		{name: "zero", retryAfter: "0"},
		{name: "http date in the past", retryAfter: past},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{Sites: []string{siteA}})
			s.Throttle(1, tc.retryAfter)
			c := call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}

			got := c.do(t, s)
			if got.status != http.StatusTooManyRequests {
				t.Fatalf("status: got %d, want 429", got.status)
			}
			if ra := got.header.Get("Retry-After"); ra != tc.retryAfter {
				t.Errorf("Retry-After: got %q, want %q verbatim", ra, tc.retryAfter)
			}
			if e := got.wholeError(t); e.Error.Code != "TooManyRequests" || e.Error.InnerError.Code != "throttledRequest" {
				t.Errorf("error: got code %q inner %q, want TooManyRequests/throttledRequest", e.Error.Code, e.Error.InnerError.Code)
			}
			if len(s.Followed("u1")) != 0 {
				t.Errorf("Followed: got %q, want none after 429", s.Followed("u1"))
			}

			// The throttle expired, so the next call is served even if early.
			if next := c.do(t, s); next.status != http.StatusOK {
				t.Errorf("next status: got %d, want 200", next.status)
			}
			calls := s.Calls()
			if calls[0].Status != 429 || calls[0].RetryAfter < tc.minWait || calls[0].Early {
				t.Errorf("throttled Call: got status %d RetryAfter %v early %v, want 429, at least %v, not early", calls[0].Status, calls[0].RetryAfter, calls[0].Early, tc.minWait)
			}
			if calls[1].Early != tc.wantEarly {
				t.Errorf("next Call.Early: got %v, want %v", calls[1].Early, tc.wantEarly)
			}
			if wantN := map[bool]int{true: 1}[tc.wantEarly]; s.EarlyCalls() != wantN {
				t.Errorf("EarlyCalls: got %d, want %d", s.EarlyCalls(), wantN)
			}
		})
	}
}

func TestThrottleBeforeUnavailable(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}})
	s.Unavailable(1, http.StatusServiceUnavailable)
	s.Throttle(1, "0")
	c := call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}
	var got []int
	for range 3 {
		got = append(got, c.do(t, s).status)
	}
	if want := []int{429, 503, 200}; !slices.Equal(got, want) {
		t.Errorf("statuses: got %v, want %v", got, want)
	}
}

func TestRateLimit(t *testing.T) {
	// A rate this slow refills nothing during the test.
	s := newSim(t, Options{Sites: []string{siteA}, RateLimit: 0.01, Burst: 2})
	c := call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}
	var got []int
	var retryAfter []string
	for range 4 {
		r := c.do(t, s)
		got = append(got, r.status)
		retryAfter = append(retryAfter, r.header.Get("Retry-After"))
	}
	if want := []int{200, 200, 429, 429}; !slices.Equal(got, want) {
		t.Fatalf("statuses: got %v, want %v", got, want)
	}
	for i, ra := range retryAfter[2:] {
		secs, err := strconv.ParseFloat(ra, 64)
		if err != nil || secs <= 0 || secs > 100 {
			t.Errorf("429 #%d Retry-After: got %q, want seconds in (0, 100]", i, ra)
		}
	}
	calls := s.Calls()
	if calls[2].Early || !calls[3].Early || s.EarlyCalls() != 1 {
		t.Errorf("Early: got %v/%v (EarlyCalls %d), want false/true (1)", calls[2].Early, calls[3].Early, s.EarlyCalls())
	}
	if calls[2].RetryAfter <= 0 {
		t.Errorf("Call.RetryAfter: got %v, want > 0", calls[2].RetryAfter)
	}
}

func TestRateLimitHonouredRetryAfterIsAdmitted(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}, RateLimit: 5, Burst: 1})
	c := call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}
	var throttled *result
	for range 50 {
		if r := c.do(t, s); r.status == http.StatusTooManyRequests {
			throttled = &r
			break
		}
	}
	if throttled == nil {
		t.Fatal("no 429 in 50 calls at 5 calls/s")
	}
	secs, err := strconv.ParseFloat(throttled.header.Get("Retry-After"), 64)
	if err != nil {
		t.Fatalf("Retry-After %q: %v", throttled.header.Get("Retry-After"), err)
	}
	time.Sleep(time.Duration(secs * float64(time.Second)))
	if r := c.do(t, s); r.status != http.StatusOK {
		t.Errorf("after honouring Retry-After: got %d, want 200", r.status)
	}
	if s.EarlyCalls() != 0 {
		t.Errorf("EarlyCalls: got %d, want 0", s.EarlyCalls())
	}
}

func TestRetryAfterFormatting(t *testing.T) {
	tests := []struct {
		delay time.Duration
		want  string
	}{
		{time.Second, "1"},
		{1500 * time.Millisecond, "1.5"},
		{1001*time.Millisecond + time.Nanosecond, "1.002"},
		{time.Nanosecond, "0.001"},
		{2128 * time.Millisecond, "2.128"},
	}
	for _, tc := range tests {
		if got := formatSeconds(ceilMillis(tc.delay)); got != tc.want {
			t.Errorf("formatSeconds(ceilMillis(%v)): got %q, want %q", tc.delay, got, tc.want)
		}
	}
}

func TestLatency(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}, Latency: 30 * time.Millisecond})
	c := call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}
	start := time.Now()
	if got := c.do(t, s); got.status != http.StatusOK {
		t.Fatalf("status: got %d, want 200", got.status)
	}
	if el := time.Since(start); el < 30*time.Millisecond {
		t.Errorf("elapsed: got %v, want not before 30ms", el)
	}
	s.SetLatency(0)
	if got := c.do(t, s); got.status != http.StatusOK {
		t.Fatalf("status after SetLatency(0): got %d, want 200", got.status)
	}
}

func TestPoisonSites(t *testing.T) {
	const malformed = "contoso.sharepoint.com,not-a-guid"
	tests := []struct {
		name      string
		op        string
		ids       []string
		wantOK    int      // success status; 0 for the whole call refused with 400
		wantState []string // u1's followed sites afterwards (siteB before)
	}{
		{name: "poison alone", op: "add", ids: []string{malformed}, wantState: []string{siteB}},
		{name: "poison among good sites", op: "add", ids: []string{siteA, malformed, siteB}, wantState: []string{siteB}},
		{name: "poison matched case-insensitively", op: "add", ids: []string{siteA, strings.ToUpper(malformed)}, wantState: []string{siteB}},
		{name: "well-formed poison", op: "add", ids: []string{strings.ToUpper(siteUnknown)}, wantState: []string{siteB}},
		{name: "remove with poison", op: "remove", ids: []string{siteB, malformed}, wantState: []string{siteB}},
		{name: "good sites only", op: "add", ids: []string{siteA, siteB}, wantOK: http.StatusOK, wantState: []string{siteB, siteA}},
		{name: "good remove", op: "remove", ids: []string{siteB}, wantOK: http.StatusNoContent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, Options{Sites: []string{siteA, siteB}, PoisonSites: []string{malformed, siteUnknown}})
			s.SetFollowed("u1", siteB)
			tok := fetchToken(t, s)
			if tc.wantOK == 0 {
				// The poison is judged with the body: a throttle waiting
				// for the next call is left for a call that gets past it.
				s.Throttle(1, "0")
			}

			got := call{op: tc.op, user: "u1", ids: tc.ids, token: tok}.do(t, s)
			want := cmp.Or(tc.wantOK, http.StatusBadRequest)
			if got.status != want {
				t.Fatalf("status: got %d, want %d (body %s)", got.status, want, got.body)
			}
			if tc.wantOK == 0 {
				if code := got.wholeError(t).Error.Code; code != "invalidRequest" {
					t.Errorf("code: got %q, want invalidRequest", code)
				}
				if next := (call{op: "add", user: "u1", ids: []string{siteA}, token: tok}).do(t, s); next.status != http.StatusTooManyRequests {
					t.Errorf("next call: got %d, want the pending 429", next.status)
				}
			}
			wantState := slices.Sorted(slices.Values(tc.wantState))
			if got := s.Followed("u1"); !slices.Equal(got, wantState) {
				t.Errorf("Followed: got %q, want %q", got, wantState)
			}
		})
	}
}
