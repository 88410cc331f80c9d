package graphclient

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

func betaClient(t *testing.T, sim *graphsim.Server) *Client {
	t.Helper()
	return newSimClient(t, sim, func(cfg *Config) {
		cfg.API = APIBetaFollowingSites
		cfg.MaxAttempts = 3
	})
}

// wantCall is what one followingSites call carried and how it was answered.
type wantCall struct {
	ids     []string
	actions []string
	status  int
}

func checkBetaCalls(t *testing.T, got []graphsim.Call, want []wantCall) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d calls %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Op != graphsim.OpFollowingSites || g.Status != w.status || !slices.Equal(g.SiteIDs, w.ids) || !slices.Equal(g.Actions, w.actions) {
			t.Errorf("call %d: op %q status %d ids %v actions %v, want %q %d %v %v",
				i, g.Op, g.Status, g.SiteIDs, g.Actions, graphsim.OpFollowingSites, w.status, w.ids, w.actions)
		}
	}
}

func TestApplyMixedBeta(t *testing.T) {
	unknown := siteID(99) // well-formed, not a site the sim knows
	tests := []struct {
		name         string
		fault        func(sim *graphsim.Server)
		follows      []string
		unfollows    []string
		want         []want
		wantCalls    []wantCall
		wantFollowed []string
	}{
		{
			name:         "200 all applied",
			follows:      siteIDs(1, 2),
			unfollows:    []string{siteID(3)},
			want:         []want{{outcome: Applied, attempts: 1}, {outcome: Applied, attempts: 1}, {outcome: Applied, attempts: 1}},
			wantCalls:    []wantCall{{ids: []string{siteID(1), siteID(2), siteID(3)}, actions: []string{"follow", "follow", "unfollow"}, status: http.StatusOK}},
			wantFollowed: []string{siteID(1), siteID(2), siteID(4)},
		},
		{
			// The 207 lists only the failed follow: the unlisted unfollows
			// succeeded, the unlisted follows (site 2 was not applied at all)
			// are re-sent, alone, until an answer accounts for them.
			name:      "207 lists only failures",
			fault:     func(sim *graphsim.Server) { sim.OmitSite(siteID(2), 1) },
			follows:   []string{siteID(1), siteID(2), unknown},
			unfollows: []string{siteID(3), siteID(4)},
			want: []want{
				{outcome: Applied, attempts: 2},
				{outcome: Applied, attempts: 2},
				{outcome: Rejected, code: "invalidRequest", status: http.StatusMultiStatus, attempts: 1},
				{outcome: Applied, attempts: 1},
				{outcome: Applied, attempts: 1},
			},
			wantCalls: []wantCall{
				{ids: []string{siteID(1), siteID(2), unknown, siteID(3), siteID(4)}, actions: []string{"follow", "follow", "follow", "unfollow", "unfollow"}, status: http.StatusMultiStatus},
				{ids: siteIDs(1, 2), actions: []string{"follow", "follow"}, status: http.StatusOK},
			},
			wantFollowed: siteIDs(1, 2),
		},
		{
			name:         "failed unfollow listed",
			fault:        func(sim *graphsim.Server) { sim.FailSite(siteID(3), "accessDenied", 1) },
			unfollows:    siteIDs(3, 4),
			want:         []want{{outcome: Rejected, code: "accessDenied", status: http.StatusMultiStatus, attempts: 1}, {outcome: Applied, attempts: 1}},
			wantCalls:    []wantCall{{ids: siteIDs(3, 4), actions: []string{"unfollow", "unfollow"}, status: http.StatusMultiStatus}},
			wantFollowed: []string{siteID(3)},
		},
		{
			name:      "transient site error re-sent",
			fault:     func(sim *graphsim.Server) { sim.FailSite(siteID(3), "serviceNotAvailable", 1) },
			follows:   []string{siteID(1)},
			unfollows: []string{siteID(3)},
			want:      []want{{outcome: Applied, attempts: 2}, {outcome: Applied, attempts: 2}},
			wantCalls: []wantCall{
				{ids: []string{siteID(1), siteID(3)}, actions: []string{"follow", "unfollow"}, status: http.StatusMultiStatus},
				{ids: []string{siteID(1), siteID(3)}, actions: []string{"follow", "unfollow"}, status: http.StatusOK},
			},
			wantFollowed: []string{siteID(1), siteID(4)},
		},
		{
			name:      "throttled whole call retried",
			fault:     func(sim *graphsim.Server) { sim.Throttle(1, "0.05") },
			follows:   []string{siteID(1)},
			unfollows: []string{siteID(3)},
			want:      []want{{outcome: Applied, attempts: 2}, {outcome: Applied, attempts: 2}},
			wantCalls: []wantCall{
				{ids: []string{siteID(1), siteID(3)}, actions: []string{"follow", "unfollow"}, status: http.StatusTooManyRequests},
				{ids: []string{siteID(1), siteID(3)}, actions: []string{"follow", "unfollow"}, status: http.StatusOK},
			},
			wantFollowed: []string{siteID(1), siteID(4)},
		},
		{
			name:      "site in both lists refused, the rest sent",
			follows:   siteIDs(1, 2),
			unfollows: []string{strings.ToUpper(siteID(2)), siteID(3)},
			want: []want{
				{outcome: Applied, attempts: 1},
				{outcome: Rejected, code: CodeInvalidOperation, attempts: 0},
				{outcome: Rejected, code: CodeInvalidOperation, attempts: 0},
				{outcome: Applied, attempts: 1},
			},
			wantCalls:    []wantCall{{ids: []string{siteID(1), siteID(3)}, actions: []string{"follow", "unfollow"}, status: http.StatusOK}},
			wantFollowed: []string{siteID(1), siteID(4)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := newSim(t)
			sim.SetFollowed("u1", siteID(3), siteID(4))
			if tt.fault != nil {
				tt.fault(sim)
			}
			c := betaClient(t, sim)
			if !c.Mixes() {
				t.Fatal("Mixes() = false for the beta API")
			}

			got := c.ApplyMixed(context.Background(), "u1", tt.follows, tt.unfollows)

			checkResults(t, append(slices.Clone(tt.follows), tt.unfollows...), got, tt.want)
			checkBetaCalls(t, sim.Calls(), tt.wantCalls)
			followed := lower(sim.Followed("u1"))
			slices.Sort(followed)
			wantFollowed := lower(tt.wantFollowed)
			slices.Sort(wantFollowed)
			if !slices.Equal(followed, wantFollowed) {
				t.Errorf("followed = %v, want %v", followed, wantFollowed)
			}
		})
	}
}

// Apply in the beta mode sends its one action as a followingSites PATCH.
func TestApplyBetaOneAction(t *testing.T) {
	tests := []struct {
		name   string
		op     Operation
		action string
	}{
		{name: "add", op: Add, action: "follow"},
		{name: "remove", op: Remove, action: "unfollow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := newSim(t)
			c := betaClient(t, sim)
			ids := siteIDs(1, 2)

			got := c.Apply(context.Background(), "u1", tt.op, ids)

			checkResults(t, ids, got, allApplied(2))
			checkBetaCalls(t, sim.Calls(), []wantCall{{ids: ids, actions: []string{tt.action, tt.action}, status: http.StatusOK}})
		})
	}
}

// With the v1 API, ApplyMixed is one call per action, follows first.
func TestApplyMixedV1(t *testing.T) {
	t.Parallel()
	sim := newSim(t)
	sim.SetFollowed("u1", siteID(3))
	c := newSimClient(t, sim, nil)
	if c.Mixes() {
		t.Fatal("Mixes() = true for the v1 API")
	}
	follows, unfollows := siteIDs(1, 2), []string{siteID(3)}

	got := c.ApplyMixed(context.Background(), "u1", follows, unfollows)

	checkResults(t, append(slices.Clone(follows), unfollows...), got, allApplied(3))
	calls := sim.Calls()
	if len(calls) != 2 || calls[0].Op != "add" || !slices.Equal(calls[0].SiteIDs, follows) ||
		calls[1].Op != "remove" || !slices.Equal(calls[1].SiteIDs, unfollows) || calls[1].Actions != nil {
		t.Fatalf("calls = %+v, want an add of %v then a remove of %v", calls, follows, unfollows)
	}
}

// The beta body is exactly the reference page's shape.
func TestBetaRequestBody(t *testing.T) {
	c := &Client{api: APIBetaFollowingSites}
	follow, unfollow := siteID(1), siteID(2)
	r := newRun(c, "u1", Add, []string{follow, unfollow})
	r.sites[strings.ToLower(unfollow)].op = Remove
	keys := r.pending()

	got, err := r.requestBody(keys, []string{follow, unfollow})
	if err != nil {
		t.Fatalf("requestBody: %v", err)
	}
	want := `{"value":[{"id":"` + follow + `","@oneDrive.action":"follow"},{"id":"` + unfollow + `","@oneDrive.action":"unfollow"}]}`
	if string(got) != want {
		t.Errorf("body = %s, want %s", got, want)
	}
	if method, target := r.target(); method != http.MethodPatch || target != "/beta/users/u1/followingSites" {
		t.Errorf("target = %s %s, want PATCH /beta/users/u1/followingSites", method, target)
	}
}

func TestNewRefusesUnknownAPI(t *testing.T) {
	tests := []struct {
		api     API
		wantErr bool
	}{
		{api: ""}, {api: APIV1}, {api: APIBetaFollowingSites},
		{api: "beta", wantErr: true}, {api: "V1", wantErr: true},
	}
	for _, tt := range tests {
		_, err := New(Config{BaseURL: "https://graph.microsoft.com", Credential: &countingCredential{}, API: tt.api})
		if (err != nil) != tt.wantErr {
			t.Errorf("New(API %q) error = %v, want error %v", tt.api, err, tt.wantErr)
		}
	}
}
