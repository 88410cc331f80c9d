package graphsim

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

// chaosOutcome is what one call answered under chaos: its status and, for a
// 207, which requested sites carried an error entry.
type chaosOutcome struct {
	status int
	failed string
}

func (o chaosOutcome) String() string { return fmt.Sprintf("%d%s", o.status, o.failed) }

// runChaos sends n add calls of siteA and siteB one after the other and
// returns what each answered.
func runChaos(t *testing.T, c Chaos, n int) []chaosOutcome {
	t.Helper()
	s := newSim(t, Options{Sites: []string{siteA, siteB}})
	s.SetChaos(c)
	token := fetchToken(t, s)
	out := make([]chaosOutcome, n)
	for i := range out {
		r := call{op: "add", user: "ann@contoso.com", ids: []string{siteA, siteB}, token: token}.do(t, s)
		out[i].status = r.status
		if r.status == 207 {
			var body struct {
				Value []entry `json:"value"`
			}
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatalf("decode 207: %v", err)
			}
			for _, e := range body.Value {
				if e.Error != nil {
					out[i].failed += " " + e.Error.Code
				}
			}
		}
	}
	return out
}

func count(outs []chaosOutcome, status int) int {
	n := 0
	for _, o := range outs {
		if o.status == status {
			n++
		}
	}
	return n
}

func TestChaosFaults(t *testing.T) {
	const n = 200
	tests := []struct {
		name     string
		chaos    Chaos
		wantMin  map[int]int // status → at least
		wantMax  map[int]int // status → at most
		wantHead string      // Retry-After of 429s
	}{
		{name: "off", chaos: Chaos{}, wantMin: map[int]int{200: n}},
		{name: "always throttled", chaos: Chaos{Seed: 1, Throttle: 1, RetryAfter: "0"}, wantMin: map[int]int{429: n}},
		{name: "outage", chaos: Chaos{Seed: 1, Unavailable: 1}, wantMin: map[int]int{503: n}},
		{name: "every site transient", chaos: Chaos{Seed: 1, SiteTransient: 1}, wantMin: map[int]int{207: n}},
		{name: "a quarter throttled", chaos: Chaos{Seed: 7, Throttle: 0.25, RetryAfter: "0"},
			wantMin: map[int]int{429: n / 8, 200: n / 2}, wantMax: map[int]int{429: n / 2}},
		{name: "a quarter unavailable", chaos: Chaos{Seed: 7, Unavailable: 0.25},
			wantMin: map[int]int{503: n / 8, 200: n / 2}, wantMax: map[int]int{503: n / 2}},
		{name: "jitter only", chaos: Chaos{Seed: 3, LatencyJitter: time.Millisecond}, wantMin: map[int]int{200: n}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outs := runChaos(t, tt.chaos, n)
			for status, want := range tt.wantMin {
				if got := count(outs, status); got < want {
					t.Errorf("answers %d: got %d of %d, want at least %d", status, got, n, want)
				}
			}
			for status, want := range tt.wantMax {
				if got := count(outs, status); got > want {
					t.Errorf("answers %d: got %d of %d, want at most %d", status, got, n, want)
				}
			}
		})
	}
}

func TestChaosSeedReplays(t *testing.T) {
	c := Chaos{Seed: 42, Throttle: 0.2, RetryAfter: "0", Unavailable: 0.2, SiteTransient: 0.3}
	first := runChaos(t, c, 60)
	second := runChaos(t, c, 60)
	if !slices.Equal(first, second) {
		t.Errorf("same seed, same calls: got\n%v\nthen\n%v, want equal", first, second)
	}
	c.Seed = 43
	other := runChaos(t, c, 60)
	if slices.Equal(first, other) {
		t.Errorf("seeds 42 and 43 gave the same faults %v, want different", first)
	}
}

func TestChaosRetryAfterAndOff(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}})
	token := fetchToken(t, s)
	s.SetChaos(Chaos{Seed: 5, Throttle: 1, RetryAfter: "0.01"})
	r := call{op: "add", user: "ann@contoso.com", ids: []string{siteA}, token: token}.do(t, s)
	if r.status != 429 || r.header.Get("Retry-After") != "0.01" {
		t.Errorf("throttled: got %d Retry-After %q, want 429 Retry-After %q", r.status, r.header.Get("Retry-After"), "0.01")
	}
	s.SetChaos(Chaos{Unavailable: 1})
	r = call{op: "add", user: "ann@contoso.com", ids: []string{siteA}, token: token}.do(t, s)
	if r.status != 503 || r.header.Get("Retry-After") != "" {
		t.Errorf("outage: got %d Retry-After %q, want 503 without Retry-After", r.status, r.header.Get("Retry-After"))
	}
	time.Sleep(20 * time.Millisecond) // let the announced 10ms Retry-After pass
	s.SetChaos(Chaos{})
	r = call{op: "add", user: "ann@contoso.com", ids: []string{siteA}, token: token}.do(t, s)
	if r.status != 200 {
		t.Errorf("after the outage: got %d, want 200", r.status)
	}
}

func TestChaosSiteTransientLeavesStateAlone(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA, siteB}})
	token := fetchToken(t, s)
	s.SetChaos(Chaos{Seed: 9, SiteTransient: 1})
	r := call{op: "add", user: "ann@contoso.com", ids: []string{siteA, siteB}, token: token}.do(t, s)
	if r.status != 207 {
		t.Fatalf("status: got %d, want 207", r.status)
	}
	if got := s.Followed("ann@contoso.com"); len(got) != 0 {
		t.Errorf("followed after transient entries: got %v, want none", got)
	}
	if got := s.Effects(); len(got) != 0 {
		t.Errorf("effects after transient entries: got %v, want none", got)
	}
}

func TestEffects(t *testing.T) {
	lower := func(id string) string { return lookupKey(id) }
	type step struct {
		op   string
		user string
		ids  []string
		fail string // FailSite code for ids[0] before the call
	}
	tests := []struct {
		name  string
		steps []step
		want  []Effect // At ignored
	}{
		{name: "follow then unfollow",
			steps: []step{{op: "add", user: "Ann@Contoso.com", ids: []string{siteA, siteB}}, {op: "remove", user: "ann@contoso.com", ids: []string{siteA}}},
			want: []Effect{{User: "ann@contoso.com", Site: lower(siteA), Op: "follow"}, {User: "ann@contoso.com", Site: lower(siteB), Op: "follow"},
				{User: "ann@contoso.com", Site: lower(siteA), Op: "unfollow"}}},
		{name: "re-asserted state counts",
			steps: []step{{op: "remove", user: "bob", ids: []string{siteA}}, {op: "remove", user: "bob", ids: []string{siteA}}},
			want:  []Effect{{User: "bob", Site: lower(siteA), Op: "unfollow"}, {User: "bob", Site: lower(siteA), Op: "unfollow"}}},
		{name: "failed and unknown sites are no effect",
			steps: []step{{op: "add", user: "cat", ids: []string{siteA, siteUnknown, siteB}, fail: "accessDenied"}},
			want:  []Effect{{User: "cat", Site: lower(siteB), Op: "follow"}}},
		{name: "a site twice in one call is one effect",
			steps: []step{{op: "add", user: "dan", ids: []string{siteA, siteA}}},
			want:  []Effect{{User: "dan", Site: lower(siteA), Op: "follow"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, Options{Sites: []string{siteA, siteB}})
			token := fetchToken(t, s)
			start := time.Now()
			for _, st := range tt.steps {
				if st.fail != "" {
					s.FailSite(st.ids[0], st.fail, 1)
				}
				call{op: st.op, user: st.user, ids: st.ids, token: token}.do(t, s)
			}
			got := s.Effects()
			if len(got) != len(tt.want) {
				t.Fatalf("effects: got %v, want %v", got, tt.want)
			}
			for i, e := range got {
				if e.At.Before(start) {
					t.Errorf("effect %d At: got %v, want not before %v", i, e.At, start)
				}
				if i > 0 && e.At.Before(got[i-1].At) {
					t.Errorf("effect %d At: got %v before effect %d's %v", i, e.At, i-1, got[i-1].At)
				}
				e.At = time.Time{}
				if e != tt.want[i] {
					t.Errorf("effect %d: got %+v, want %+v", i, e, tt.want[i])
				}
			}
			s.Reset()
			if got := len(s.Effects()); got != len(tt.want) {
				t.Errorf("effects after Reset: got %d, want %d (Reset keeps them)", got, len(tt.want))
			}
		})
	}
}
