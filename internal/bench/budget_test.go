package bench

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
)

func TestFullBatches(t *testing.T) {
	const users, batch = 3, 20
	gen := fullBatches(users, batch)
	seen := map[string]bool{}
	for i := range 2 * users {
		req := gen(i)
		b, err := encode(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := event.Decoder{}.Decode(b)
		if err != nil {
			t.Fatalf("request %d does not decode: %v", i, err)
		}
		if got.UserID != userName(i%users) || len(got.SiteIDs) != batch {
			t.Errorf("request %d: got user %s with %d sites, want %s with %d", i, got.UserID, len(got.SiteIDs), userName(i%users), batch)
		}
		for _, s := range got.SiteIDs {
			k := got.UserID + " " + event.SiteKey(s)
			if seen[k] {
				t.Errorf("request %d repeats %s", i, k)
			}
			seen[k] = true
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    int64
		wantErr bool
	}{
		{name: "plain", stat: "4242 (consumer) S 1 4242 4242 0 -1 4194560 1200 0 0 0 731 96 0 0 20 0 9 0 123456 0 0\n", want: 827},
		{name: "command with spaces and parentheses", stat: "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 0 0", want: 11},
		{name: "cut short", stat: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 5", wantErr: true},
		{name: "no command", stat: "7 x R", wantErr: true},
		{name: "not a number", stat: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 five 6 0", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.stat))
			if tc.wantErr {
				if !errors.Is(err, errStat) {
					t.Fatalf("error: got %v, want errStat", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestSpreadWindows(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(sec float64, status int) graphsim.Call {
		c := graphsim.Call{At: t0.Add(time.Duration(sec * float64(time.Second))), Status: status}
		c.Throttled = status == http.StatusTooManyRequests
		return c
	}
	calls := []graphsim.Call{
		at(0, 200), at(0.5, 200), at(0.9, 429), // first tenth of window 1
		at(5, 200),
		at(10, 200), // window 2 begins
		at(15, 200), at(19.99, 204),
		at(20, 200), // after the last window
	}
	got := spreadWindows(calls, t0, 10*time.Second, 2)
	want := []windowSpread{
		{windowStats: windowStats{calls: 4, admitted: 3, throttled: 1}, firstTenth: 3},
		{windowStats: windowStats{calls: 3, admitted: 3}, firstTenth: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d windows, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("window %d: got %+v, want %+v", i+1, got[i], want[i])
		}
	}
	if s := got[0].share(); s != 0.75 {
		t.Errorf("window 1 share: got %v, want 0.75", s)
	}
	if s := (windowSpread{}).share(); s != 0 {
		t.Errorf("empty window share: got %v, want 0", s)
	}
}

func TestWindowsFrom(t *testing.T) {
	epoch := time.Unix(1000, 0)
	w := time.Minute
	tests := []struct {
		name  string
		shape graphsim.Shape
		t0    time.Duration // after epoch
		want  time.Duration // after epoch
	}{
		{"fixed, first call in the first window", graphsim.FixedWindow, 3 * time.Second, 0},
		{"fixed, first call in a later window", graphsim.FixedWindow, 150 * time.Second, 2 * time.Minute},
		{"sliding starts at the first call", graphsim.SlidingWindow, 3 * time.Second, 3 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := windowsFrom(tc.shape, epoch.Add(tc.t0), epoch, w).Sub(epoch); got != tc.want {
				t.Errorf("got %v after the epoch, want %v", got, tc.want)
			}
		})
	}
}

func TestWindowBudget(t *testing.T) {
	tests := []struct {
		window      time.Duration
		perMinute   int
		wantLimit   int
		wantLatency time.Duration
		wantEnv     string // in resource units, 2 a call
	}{
		{time.Minute, 600, 600, simLatency, "1200/1m"},
		{time.Minute, 3_000, 3_000, simLatency, "6000/1m"},
		{2 * time.Second, 600, 20, 1667 * time.Microsecond, "40/2s"},
		{2 * time.Second, 3_000, 100, 1667 * time.Microsecond, "200/2s"},
	}
	for _, tc := range tests {
		r := &runner{size: sizes{budget: budgetSizes{window: tc.window, windows: 3, users: 10}}}
		c := windowCase{shape: graphsim.FixedWindow, perMinute: tc.perMinute, given: true}
		limit, latency := r.windowBudget(c)
		if limit != tc.wantLimit || latency != tc.wantLatency {
			t.Errorf("%d/min at %s: got %d calls, %v; want %d, %v", tc.perMinute, tc.window, limit, latency, tc.wantLimit, tc.wantLatency)
		}
		if env := r.windowPart(c).settings["SITEFOLLOW_GRAPH_BUDGET"]; env != tc.wantEnv {
			t.Errorf("%d/min at %s: SITEFOLLOW_GRAPH_BUDGET got %q, want %q", tc.perMinute, tc.window, env, tc.wantEnv)
		}
	}
}
