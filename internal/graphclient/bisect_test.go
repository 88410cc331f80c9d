package graphclient

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// poisonID is a site id Graph cannot parse: graphsim refuses any call
// naming it with a whole-call 400.
func poisonID(n int) string {
	return fmt.Sprintf("contoso.sharepoint.com,poison-%d", n)
}

// withPoison is siteIDs(1, n) with the sites at positions replaced by
// poison ids.
func withPoison(n int, positions ...int) []string {
	ids := siteIDs(1, n)
	for _, p := range positions {
		ids[p] = poisonID(p)
	}
	return ids
}

// splitBound is the most calls the bisection may make for bad sites among
// n: one call, then two for each of at most ⌈log₂ n⌉ splits on the way to
// each bad site, and never more than a full split down to single sites.
func splitBound(n, bad int) int {
	if n <= 1 {
		return 1
	}
	depth := int(math.Ceil(math.Log2(float64(n))))
	return min(1+2*bad*depth, 2*n-1)
}

func TestApplyBisectsWholeCall400(t *testing.T) {
	tests := []struct {
		name        string
		op          Operation
		ids         []string
		poison      []int // positions of poison ids in ids
		maxAttempts int   // 0: testConfig's
		setup       func(*graphsim.Server)
		retried     int // calls answered with a transient failure, on top of the bound
		exactCalls  int // 0: only the bound is checked
	}{
		{name: "one poison first of 20", op: Add, ids: withPoison(20, 0), poison: []int{0}},
		{name: "one poison last of 20", op: Add, ids: withPoison(20, 19), poison: []int{19}},
		{name: "one poison mid of 20", op: Add, ids: withPoison(20, 7), poison: []int{7}},
		{name: "one poison, a single attempt allowed", op: Add, ids: withPoison(20, 12), poison: []int{12}, maxAttempts: 1},
		{name: "two poison apart", op: Add, ids: withPoison(20, 3, 16), poison: []int{3, 16}},
		{name: "two poison adjacent", op: Add, ids: withPoison(20, 9, 10), poison: []int{9, 10}},
		{name: "all poison", op: Add, ids: withPoison(20, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19),
			poison: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, exactCalls: 39},
		{name: "single poison site", op: Add, ids: withPoison(1, 0), poison: []int{0}, exactCalls: 1},
		{name: "single good site", op: Add, ids: siteIDs(1, 1), exactCalls: 1},
		{name: "no poison", op: Add, ids: siteIDs(1, 20), exactCalls: 1},
		{name: "remove with one poison", op: Remove, ids: withPoison(20, 5), poison: []int{5}},
		{name: "throttle in the middle", op: Add, ids: withPoison(20, 19), poison: []int{19},
			// The poison is judged before the throttle, so the first half
			// free of it (sites 0..9) is the call throttled.
			setup: func(s *graphsim.Server) { s.Throttle(1, "0") }, retried: 1},
		{name: "outage in the middle", op: Remove, ids: withPoison(20, 11, 12), poison: []int{11, 12},
			setup: func(s *graphsim.Server) { s.Unavailable(2, http.StatusServiceUnavailable) }, retried: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var poisonIDs []string
			for _, p := range tt.poison {
				poisonIDs = append(poisonIDs, tt.ids[p])
			}
			sim, err := graphsim.New(graphsim.Options{Sites: siteIDs(1, 20), PoisonSites: poisonIDs})
			if err != nil {
				t.Fatalf("graphsim.New: %v", err)
			}
			t.Cleanup(sim.Close)
			if tt.op == Remove {
				sim.SetFollowed("u1", siteIDs(1, 20)...)
			}
			if tt.setup != nil {
				tt.setup(sim)
			}
			reg := prometheus.NewRegistry()
			metrics := NewMetrics(reg)
			c := newSimClient(t, sim, func(cfg *Config) {
				cfg.Metrics = metrics
				if tt.maxAttempts != 0 {
					cfg.MaxAttempts = tt.maxAttempts
				}
			})

			got := c.Apply(context.Background(), "u1", tt.op, tt.ids)

			wants := allApplied(len(tt.ids))
			for _, p := range tt.poison {
				wants[p] = want{outcome: Rejected, code: "invalidRequest", status: http.StatusBadRequest}
			}
			checkResults(t, tt.ids, got, wants)

			var good []string
			for i, id := range tt.ids {
				if !slices.Contains(tt.poison, i) {
					good = append(good, id)
				}
			}
			wantState := lower(good)
			if tt.op == Remove {
				wantState = lower(slices.DeleteFunc(siteIDs(1, 20), func(id string) bool { return slices.Contains(good, id) }))
			}
			slices.Sort(wantState)
			if st := sim.Followed("u1"); !slices.Equal(st, wantState) {
				t.Errorf("followed = %q, want %q", st, wantState)
			}

			calls := sim.Calls()
			bound := splitBound(len(tt.ids), len(tt.poison)) + tt.retried
			if tt.exactCalls != 0 && len(calls) != tt.exactCalls {
				t.Errorf("calls = %d, want %d", len(calls), tt.exactCalls)
			}
			if len(calls) > bound {
				t.Errorf("calls = %d, want at most %d", len(calls), bound)
			}
			// Each poison site is rejected by a call of its own.
			for _, id := range poisonIDs {
				if !slices.ContainsFunc(calls, func(c graphsim.Call) bool {
					return c.Status == http.StatusBadRequest && slices.Equal(c.SiteIDs, []string{id})
				}) {
					t.Errorf("no call carried %s alone and was refused", id)
				}
			}
			// A call refused for a transient reason is sent again as it was:
			// its half, not the whole.
			for i, c := range calls {
				if c.Status < 500 && c.Status != http.StatusTooManyRequests {
					continue
				}
				next := slices.IndexFunc(calls[i+1:], func(n graphsim.Call) bool { return slices.Contains(n.SiteIDs, c.SiteIDs[0]) })
				if next < 0 || !slices.Equal(calls[i+1+next].SiteIDs, c.SiteIDs) {
					t.Errorf("call %d answered %d carried %d sites; the next call for them = %+v, want the same sites", i, c.Status, len(c.SiteIDs), calls[i+1:])
				}
			}
			refused := 0
			for _, c := range calls {
				if c.Status == http.StatusBadRequest && len(c.SiteIDs) > 1 {
					refused++
				}
			}
			if splits := testutil.ToFloat64(metrics.retries.WithLabelValues(string(tt.op), reasonSplit)); int(splits) != refused {
				t.Errorf("split retries = %v, want %d, one per refused call of several sites", splits, refused)
			}
		})
	}
}

// Wherever in 20 sites the one poison is, it takes at most 1+2·⌈log₂ 20⌉
// calls to find.
func TestApplyBisectionBoundEveryPosition(t *testing.T) {
	const n = 20
	var poison []string
	for p := range n {
		poison = append(poison, poisonID(p))
	}
	sim, err := graphsim.New(graphsim.Options{Sites: siteIDs(1, n), PoisonSites: poison})
	if err != nil {
		t.Fatalf("graphsim.New: %v", err)
	}
	t.Cleanup(sim.Close)
	c := newSimClient(t, sim, nil)
	worst := 0
	for p := range n {
		before := sim.CallCount()
		ids := withPoison(n, p)
		got := c.Apply(context.Background(), fmt.Sprintf("u%d", p), Add, ids)
		wants := allApplied(n)
		wants[p] = want{outcome: Rejected, code: "invalidRequest", status: http.StatusBadRequest}
		checkResults(t, ids, got, wants)
		calls := sim.CallCount() - before
		if calls > splitBound(n, 1) {
			t.Errorf("poison at %d: %d calls, want at most %d", p, calls, splitBound(n, 1))
		}
		worst = max(worst, calls)
	}
	t.Logf("worst case for one poison among %d: %d calls", n, worst)
}

// A 400 that every call gets, whatever it carries (a malformed body, say),
// still ends: each site is rejected alone, in 2n−1 calls.
func TestApplyEvery400Ends(t *testing.T) {
	for _, n := range []int{1, 2, 3, 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			g := newScriptedGraph(t, graphErr(http.StatusBadRequest, "BadRequest"))
			var logs syncBuffer
			c := newScriptedClient(t, g, &countingCredential{}, func(cfg *Config) {
				cfg.MaxAttempts = 1
				cfg.Logger = zerolog.New(&logs)
			})
			ids := siteIDs(1, n)

			got := c.Apply(context.Background(), "u1", Add, ids)

			wants := make([]want, n)
			for i := range wants {
				wants[i] = want{outcome: Rejected, code: "BadRequest", status: http.StatusBadRequest}
			}
			checkResults(t, ids, got, wants)
			if calls := len(g.requests()); calls != 2*n-1 {
				t.Errorf("calls = %d, want %d", calls, 2*n-1)
			}
			// The log line of each call refused whole says it was split.
			if splits := strings.Count(logs.String(), `"split":true`); splits != n-1 {
				t.Errorf("log lines with split = %d, want %d:\n%s", splits, n-1, logs.String())
			}
		})
	}
}

// What stops a run half-way through the bisection holds every open site
// back with its reason, the halves not sent yet included; the sites already
// decided keep their verdicts.
func TestApplyBisectionStopped(t *testing.T) {
	t.Parallel()
	ids := withPoison(20, 0)
	sim, err := graphsim.New(graphsim.Options{Sites: siteIDs(1, 20), PoisonSites: []string{ids[0]}})
	if err != nil {
		t.Fatalf("graphsim.New: %v", err)
	}
	t.Cleanup(sim.Close)
	c := newSimClient(t, sim, nil)
	// 20 → [0..9] → [0..4] → [0,1] → [0] rejected, [1] applied; then the
	// permit refuses.
	const allowed = 6
	var mu sync.Mutex
	asked := 0
	refused := errors.New("lease lost")
	permit := WithPermit(func(context.Context, time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		asked++
		if asked > allowed {
			return refused
		}
		return nil
	})

	got := c.Apply(context.Background(), "u1", Add, ids, permit)

	wants := make([]want, len(ids))
	wants[0] = want{outcome: Rejected, code: "invalidRequest", status: http.StatusBadRequest}
	wants[1] = want{outcome: Applied}
	for i := 2; i < len(wants); i++ {
		wants[i] = want{outcome: Unresolved, code: CodeNotPermitted}
	}
	checkResults(t, ids, got, wants)
	if n := sim.CallCount(); n != allowed {
		t.Errorf("calls = %d, want %d", n, allowed)
	}
	for i := 2; i < len(got); i++ {
		if got[i].Err != nil && !strings.Contains(got[i].Err.Message, refused.Error()) {
			t.Errorf("result %d: message %q, want the permit's refusal", i, got[i].Err.Message)
		}
	}
}
