package graphsim

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// spendAt feeds calls arriving at the given offsets from t0 to a fresh
// budget starting at t0 and returns each verdict.
func spendAt(t *testing.T, b Budget, offsets ...time.Duration) []verdict {
	t.Helper()
	if err := b.validate(); err != nil {
		t.Fatalf("validate %+v: %v", b, err)
	}
	t0 := time.Unix(1_000_000, 0)
	st := newBudgetState(b, t0)
	out := make([]verdict, len(offsets))
	for i, d := range offsets {
		out[i] = st.spend(t0.Add(d))
	}
	return out
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestBudgetCounting(t *testing.T) {
	sec := time.Second
	type want struct {
		admitted  bool
		wait      time.Duration // refusals only
		headers   bool
		remaining int
		reset     time.Duration // with headers only
	}
	ok := want{admitted: true}
	tests := []struct {
		name    string
		budget  Budget
		offsets []time.Duration
		want    []want
	}{
		{
			name:    "token bucket: burst, then the refill; a throttled call takes nothing",
			budget:  Budget{Shape: TokenBucket, Rate: 10, Burst: 2},
			offsets: []time.Duration{0, 0, 0, ms(50), ms(100), ms(100)},
			// The third call waits a whole token (100 ms), the fourth half a
			// token: the refusals before did not take the refill.
			want: []want{ok, ok, {wait: ms(100)}, {wait: ms(50)}, ok, {wait: ms(100)}},
		},
		{
			name:    "token bucket: burst defaults to 1 and never overfills",
			budget:  Budget{Shape: TokenBucket, Rate: 1},
			offsets: []time.Duration{0, 10 * sec, 10 * sec},
			want:    []want{ok, ok, {wait: sec}},
		},
		{
			name:    "fixed window: headers from 80%, throttled calls counted, aligned from the start",
			budget:  Budget{Shape: FixedWindow, Limit: 5, Window: 10 * sec},
			offsets: []time.Duration{ms(9000), ms(9100), ms(9200), ms(9300), ms(9400), ms(9500), ms(10000), 11 * sec},
			want: []want{
				ok, ok, ok,
				{admitted: true, headers: true, remaining: 1, reset: ms(700)},
				{admitted: true, headers: true, remaining: 0, reset: ms(600)},
				{wait: ms(500), headers: true, remaining: 0, reset: ms(500)},
				// The window that began at 10 s is a fresh one, although
				// the first call came at 9 s.
				ok, ok,
			},
		},
		{
			name:    "sliding window: throttled calls keep the window full",
			budget:  Budget{Shape: SlidingWindow, Limit: 2, Window: 10 * sec},
			offsets: []time.Duration{0, sec, 5 * sec, ms(10500), 11 * sec, 15 * sec},
			want: []want{
				ok,
				{admitted: true, headers: true, remaining: 0, reset: 9 * sec},
				// Counted calls at 0, 1, 5: admitted again when the call
				// at 1 leaves (11 s); the oldest leaves at 10 s (Reset).
				{wait: 6 * sec, headers: true, remaining: 0, reset: 5 * sec},
				// At 10.5 the call at 0 has left, yet 1 and 5 (throttled)
				// are still counted: refused until the call at 5 leaves.
				{wait: ms(4500), headers: true, remaining: 0, reset: ms(500)},
				// At 11 the window holds 5 and 10.5, both throttled calls.
				{wait: ms(9500), headers: true, remaining: 0, reset: 4 * sec},
				// At 15 the window holds 10.5 and 11, both throttled: still
				// refused, until the call at 11 leaves.
				{wait: 6 * sec, headers: true, remaining: 0, reset: ms(5500)},
			},
		},
		{
			name:    "sliding window: a call exactly one window later has left",
			budget:  Budget{Shape: SlidingWindow, Limit: 1, Window: 10 * sec},
			offsets: []time.Duration{0, 10 * sec},
			want: []want{
				{admitted: true, headers: true, remaining: 0, reset: 10 * sec},
				{admitted: true, headers: true, remaining: 0, reset: 10 * sec},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := spendAt(t, tc.budget, tc.offsets...)
			for i, v := range got {
				w := tc.want[i]
				g := want{admitted: v.admitted, wait: v.wait, headers: v.headers}
				if v.headers {
					g.remaining, g.reset = v.remaining, v.reset
					if v.limit != tc.budget.Limit {
						t.Errorf("call %d at %v: limit got %d, want %d", i, tc.offsets[i], v.limit, tc.budget.Limit)
					}
				}
				if g != w {
					t.Errorf("call %d at %v: got %+v, want %+v", i, tc.offsets[i], g, w)
				}
			}
		})
	}
}

func TestBudgetValidation(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string // in the error
	}{
		{"token bucket without a rate", Options{Budget: Budget{Shape: TokenBucket}}, "rate"},
		{"window without a limit", Options{Budget: Budget{Shape: FixedWindow, Window: time.Minute}}, "limit"},
		{"window without a length", Options{Budget: Budget{Shape: SlidingWindow, Limit: 10}}, "window"},
		{"status other than 429 or 503", Options{Budget: Budget{Shape: TokenBucket, Rate: 1, Status: 500}}, "429 or 503"},
		{"unknown shape", Options{Budget: Budget{Shape: 9}}, "unsupported"},
		{"unknown retry-after style", Options{Budget: Budget{Shape: TokenBucket, Rate: 1, RetryAfter: 7}}, "unsupported"},
		{"two budgets", Options{RateLimit: 5, Budget: Budget{Shape: TokenBucket, Rate: 1}}, "RateLimit and Budget"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.opts)
			if err == nil {
				s.Close()
				t.Fatalf("New(%+v): got no error, want one naming %q", tc.opts, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: got %v, want it to name %q", err, tc.want)
			}
		})
	}
}

// TestBudgetRefusal checks the exact answer a refusal makes in each
// Retry-After style and status, with the time given.
func TestBudgetRefusal(t *testing.T) {
	bucket := Budget{Shape: TokenBucket, Rate: 3, Burst: 1}
	window := Budget{Shape: FixedWindow, Limit: 1, Window: time.Minute}
	tests := []struct {
		name       string
		budget     Budget
		second     time.Duration // when the refused call arrives
		style      RetryAfterStyle
		status     int
		wantStatus int
		wantRA     string
		wantWait   time.Duration // announced; 0: nothing announced
	}{
		// A third of a second to the next token.
		{"token bucket, whole seconds", bucket, 0, RetryAfterWholeSeconds, 0, 429, "1", time.Second},
		{"token bucket, fractional", bucket, 0, RetryAfterFractional, 0, 429, "0.334", ms(334)},
		{"token bucket, absent", bucket, 0, RetryAfterAbsent, 0, 429, "", 0},
		{"token bucket, 503 whole seconds", bucket, 0, RetryAfterWholeSeconds, 503, 503, "1", time.Second},
		{"token bucket, 503 absent", bucket, 0, RetryAfterAbsent, 503, 503, "", 0},
		// 39.5 s to the end of the minute.
		{"fixed window, whole seconds", window, ms(20500), RetryAfterWholeSeconds, 429, 429, "40", 40 * time.Second},
		{"fixed window, fractional", window, ms(20500), RetryAfterFractional, 429, 429, "39.5", ms(39500)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.budget
			b.RetryAfter, b.Status = tc.style, tc.status
			if err := b.validate(); err != nil {
				t.Fatal(err)
			}
			t0 := time.Unix(1_000_000, 0)
			s := &Server{budget: newBudgetState(b, t0)}
			if rep, _ := s.spendBudgetLocked(t0); rep != nil {
				t.Fatalf("first call: got refused with %d, want admitted", rep.status())
			}
			rep, _ := s.spendBudgetLocked(t0.Add(tc.second))
			if rep == nil {
				t.Fatal("second call: got admitted, want refused")
			}
			if rep.status() != tc.wantStatus || !rep.throttled {
				t.Errorf("status: got %d (throttled %v), want %d (throttled)", rep.status(), rep.throttled, tc.wantStatus)
			}
			if rep.retryAfter != tc.wantRA {
				t.Errorf("Retry-After: got %q, want %q", rep.retryAfter, tc.wantRA)
			}
			if rep.announce != (tc.wantWait > 0) || rep.announce && rep.wait != tc.wantWait {
				t.Errorf("announced: got %v for %v, want %v", rep.announce, rep.wait, tc.wantWait)
			}
			hasHeaders := rep.header.Get("RateLimit-Limit") != ""
			if want := b.Shape != TokenBucket; hasHeaders != want {
				t.Errorf("RateLimit headers: got %v, want %v (window shapes only)", hasHeaders, want)
			}
		})
	}
}

// TestBudgetOverHTTP checks refusals as a client sees them, how the calls
// are recorded, and that the next call is early only when a deadline was
// announced.
func TestBudgetOverHTTP(t *testing.T) {
	t.Parallel()
	whole := func(v string) bool { n, err := strconv.Atoi(v); return err == nil && n >= 1 }
	fractional := func(v string) bool { f, err := strconv.ParseFloat(v, 64); return err == nil && f > 0 }
	absent := func(v string) bool { return v == "" }
	tests := []struct {
		name       string
		style      RetryAfterStyle
		status     int
		wantStatus int
		wantCode   string
		check      func(string) bool // judges the Retry-After header
		wantEarly  bool
	}{
		{"whole seconds", RetryAfterWholeSeconds, 0, 429, "TooManyRequests", whole, true},
		{"fractional", RetryAfterFractional, 0, 429, "TooManyRequests", fractional, true},
		{"absent", RetryAfterAbsent, 0, 429, "TooManyRequests", absent, false},
		{"503 with whole seconds", RetryAfterWholeSeconds, 503, 503, "serviceNotAvailable", whole, true},
		{"503 without Retry-After", RetryAfterAbsent, 503, 503, "serviceNotAvailable", absent, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// At 0.01 calls/s nothing refills during the test.
			s := newSim(t, Options{Sites: []string{siteA}, Budget: Budget{
				Shape: TokenBucket, Rate: 0.01, Burst: 1, RetryAfter: tc.style, Status: tc.status}})
			c := call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}
			if got := c.do(t, s); got.status != http.StatusOK {
				t.Fatalf("first call: got %d, want 200", got.status)
			}
			got := c.do(t, s)
			if got.status != tc.wantStatus {
				t.Fatalf("second call: got %d, want %d", got.status, tc.wantStatus)
			}
			if code := got.wholeError(t).Error.Code; code != tc.wantCode {
				t.Errorf("error code: got %q, want %q", code, tc.wantCode)
			}
			ra := got.header.Get("Retry-After")
			if !tc.check(ra) {
				t.Errorf("Retry-After: got %q", ra)
			}
			if h := got.header.Get("RateLimit-Remaining"); h != "" {
				t.Errorf("RateLimit-Remaining from a token bucket: got %q, want none", h)
			}
			if next := c.do(t, s); next.status != tc.wantStatus {
				t.Errorf("third call: got %d, want %d (a refusal takes no token, none refilled)", next.status, tc.wantStatus)
			}
			calls := s.Calls()
			if calls[0].Throttled || !calls[1].Throttled || calls[1].Early {
				t.Errorf("Throttled/Early: got %v/%v then %v/%v, want false/false then true/false",
					calls[0].Throttled, calls[0].Early, calls[1].Throttled, calls[1].Early)
			}
			if ra != "" {
				secs, err := strconv.ParseFloat(ra, 64)
				if err != nil || calls[1].RetryAfter != time.Duration(secs*float64(time.Second)) {
					t.Errorf("Call.RetryAfter: got %v, want the %q announced", calls[1].RetryAfter, ra)
				}
				if !calls[1].NotBefore.After(calls[1].Answered) {
					t.Errorf("Call.NotBefore %v: want after the answer at %v", calls[1].NotBefore, calls[1].Answered)
				}
			} else if calls[1].RetryAfter != 0 || !calls[1].NotBefore.IsZero() {
				t.Errorf("without Retry-After: got RetryAfter %v NotBefore %v, want neither", calls[1].RetryAfter, calls[1].NotBefore)
			}
			if calls[2].Early != tc.wantEarly {
				t.Errorf("third call Early: got %v, want %v", calls[2].Early, tc.wantEarly)
			}
			if want := map[bool]int{true: 1}[tc.wantEarly]; s.EarlyCalls() != want {
				t.Errorf("EarlyCalls: got %d, want %d", s.EarlyCalls(), want)
			}
		})
	}
}

// TestBudgetHonouredWholeSecondIsAdmitted: a client that waits the whole
// second it was told gets in, and is not early, while the budget refilled
// more than the one call the rounded-up wait suggests.
func TestBudgetHonouredWholeSecondIsAdmitted(t *testing.T) {
	t.Parallel()
	s := newSim(t, Options{Sites: []string{siteA}, Budget: Budget{
		Shape: TokenBucket, Rate: 4, Burst: 4, RetryAfter: RetryAfterWholeSeconds}})
	c := call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}
	var throttled *result
	for range 50 {
		if r := c.do(t, s); r.status == http.StatusTooManyRequests {
			throttled = &r
			break
		}
	}
	if throttled == nil {
		t.Fatal("no 429 in 50 calls at 4 calls/s, burst 4")
	}
	if ra := throttled.header.Get("Retry-After"); ra != "1" {
		t.Fatalf("Retry-After: got %q, want \"1\" (a quarter second rounded up)", ra)
	}
	time.Sleep(time.Second) // honour the Retry-After, as a client would
	for i := range 4 {
		if r := c.do(t, s); r.status != http.StatusOK {
			t.Errorf("call %d after honouring Retry-After: got %d, want 200 (a second refills 4)", i, r.status)
		}
	}
	if n := s.EarlyCalls(); n != 0 {
		t.Errorf("EarlyCalls: got %d, want 0", n)
	}
}

// TestBudgetRateLimitHeaders checks the RateLimit headers of the window
// shapes over HTTP: none below 80% of the limit, then on every answer,
// success or 429, in resource units (2 a call by default).
func TestBudgetRateLimitHeaders(t *testing.T) {
	t.Parallel()
	for _, shape := range []Shape{FixedWindow, SlidingWindow} {
		t.Run(shape.String(), func(t *testing.T) {
			t.Parallel()
			s := newSim(t, Options{Sites: []string{siteA}, Budget: Budget{
				Shape: shape, Limit: 10, Window: time.Hour, RetryAfter: RetryAfterWholeSeconds}})
			c := call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}
			for i := 1; i <= 12; i++ {
				got := c.do(t, s)
				wantStatus := http.StatusOK
				if i > 10 {
					wantStatus = http.StatusTooManyRequests
				}
				if got.status != wantStatus {
					t.Fatalf("call %d: got %d, want %d", i, got.status, wantStatus)
				}
				limit, remaining, reset := got.header.Get("RateLimit-Limit"), got.header.Get("RateLimit-Remaining"), got.header.Get("RateLimit-Reset")
				if i < 8 {
					if limit != "" || remaining != "" || reset != "" {
						t.Errorf("call %d (%d%% used): got RateLimit headers %q/%q/%q, want none", i, 10*i, limit, remaining, reset)
					}
					continue
				}
				if want := strconv.Itoa(2 * max(10-i, 0)); limit != "20" || remaining != want {
					t.Errorf("call %d: got RateLimit-Limit %q Remaining %q, want 20 and %s (units)", i, limit, remaining, want)
				}
				secs, err := strconv.Atoi(reset)
				if err != nil || secs < 1 || secs > 3600 {
					t.Errorf("call %d: RateLimit-Reset %q, want whole seconds in 1..3600", i, reset)
				}
				if i > 10 {
					ra, err := strconv.Atoi(got.header.Get("Retry-After"))
					if err != nil || ra < secs {
						t.Errorf("call %d: Retry-After %q, want whole seconds, not less than RateLimit-Reset %s", i, got.header.Get("Retry-After"), reset)
					}
				}
			}
		})
	}
}

// TestBudgetHeadersOnEveryAnswer: a call the budget admitted carries the
// headers whatever its answer, here a 404 for an unknown user.
func TestBudgetHeadersOnEveryAnswer(t *testing.T) {
	t.Parallel()
	s := newSim(t, Options{Sites: []string{siteA}, Budget: Budget{Shape: FixedWindow, Limit: 1, Window: time.Hour}})
	s.UnknownUser("ghost")
	got := call{op: "add", user: "ghost", ids: []string{siteA}, token: fetchToken(t, s)}.do(t, s)
	if got.status != http.StatusNotFound || got.header.Get("RateLimit-Remaining") != "0" {
		t.Errorf("got %d with RateLimit-Remaining %q, want 404 with 0", got.status, got.header.Get("RateLimit-Remaining"))
	}
}

func TestRestartBudget(t *testing.T) {
	t.Parallel()
	s := newSim(t, Options{Sites: []string{siteA}, Budget: Budget{Shape: FixedWindow, Limit: 1, Window: time.Hour}})
	c := call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}
	first := s.BudgetStart()
	var got []int
	for range 2 {
		got = append(got, c.do(t, s).status)
	}
	s.RestartBudget()
	got = append(got, c.do(t, s).status)
	if want := "[200 429 200]"; fmt.Sprint(got) != want {
		t.Errorf("statuses: got %v, want %s", got, want)
	}
	if !s.BudgetStart().After(first) {
		t.Errorf("BudgetStart after RestartBudget: got %v, want after %v", s.BudgetStart(), first)
	}
}
