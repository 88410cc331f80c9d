package handler_test

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphclient"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/handler"
)

// In the beta mode a user's pending follows and unfollows go out in one
// followingSites PATCH; its answers settle each site as v1's do.
func TestBetaMixesFollowsAndUnfollows(t *testing.T) {
	type req struct {
		action event.Action
		sites  []string
	}
	tests := []struct {
		name      string
		setup     func(e *env)
		requests  []req
		wantState []string
		wantDLQ   []string // follows dead-lettered
		// wantFirst is the first call's sites and actions, sorted by site.
		wantFirst map[string]string
		// wantResent is what the later calls carried (follows only).
		wantResent []string
	}{
		{
			name: "200 all applied",
			requests: []req{
				{event.Follow, []string{site(1), site(2)}},
				{event.Unfollow, []string{site(3)}},
			},
			wantState: []string{site(1), site(2), site(4)},
			wantFirst: map[string]string{site(1): "follow", site(2): "follow", site(3): "unfollow"},
		},
		{
			// The 207 lists only the unknown site's failure: the unlisted
			// unfollow succeeded, the unlisted follows (site 2 was not even
			// applied) are re-sent. Site 5's follow was overtaken by its
			// unfollow before the call: only the unfollow goes out.
			name:  "207 lists only failures",
			setup: func(e *env) { e.sim.OmitSite(site(2), 1) },
			requests: []req{
				{event.Follow, []string{site(1), unknownSite}},
				{event.Follow, []string{site(5)}},
				{event.Unfollow, []string{site(3)}},
				{event.Follow, []string{site(2)}},
				{event.Unfollow, []string{site(5)}},
			},
			wantState: []string{site(1), site(2), site(4)},
			wantDLQ:   []string{unknownSite},
			wantFirst: map[string]string{site(1): "follow", site(2): "follow", unknownSite: "follow",
				site(3): "unfollow", site(5): "unfollow"},
			wantResent: []string{site(1), site(2)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withAPI(graphclient.APIBetaFollowingSites),
				withConfig(func(c *handler.Config) { c.BatchLinger = time.Second }))
			e.sim.SetFollowed("ann@contoso.com", site(3), site(4))
			if tt.setup != nil {
				tt.setup(e)
			}
			for _, r := range tt.requests {
				e.send("ann@contoso.com", r.action, r.sites...)
			}
			e.settled()

			if got, want := e.followed("ann@contoso.com"), sorted(tt.wantState...); !slices.Equal(got, want) {
				t.Errorf("followed: got %v, want %v", got, want)
			}
			var dead []string
			for _, d := range e.deadLetters() {
				dead = append(dead, event.SiteKey(d.SiteID))
				if d.Error.Code != "invalidRequest" || d.Action != event.Follow {
					t.Errorf("dead letter: code %q action %q, want invalidRequest follow", d.Error.Code, d.Action)
				}
			}
			slices.Sort(dead)
			if want := sorted(tt.wantDLQ...); !slices.Equal(dead, want) {
				t.Errorf("dead-lettered: got %v, want %v", dead, want)
			}

			calls := e.sim.Calls()
			if len(calls) == 0 {
				t.Fatal("no Graph calls")
			}
			for i, c := range calls {
				if c.Op != graphsim.OpFollowingSites {
					t.Errorf("call %d: op %q, want %q", i, c.Op, graphsim.OpFollowingSites)
				}
			}
			first := map[string]string{}
			for i, id := range calls[0].SiteIDs {
				first[event.SiteKey(id)] = calls[0].Actions[i]
			}
			wantFirst := map[string]string{}
			for id, a := range tt.wantFirst {
				wantFirst[event.SiteKey(id)] = a
			}
			if len(first) != len(calls[0].SiteIDs) || !maps.Equal(first, wantFirst) {
				t.Errorf("first call: got %v %v, want %v", calls[0].SiteIDs, calls[0].Actions, wantFirst)
			}
			var resent []string
			for _, c := range calls[1:] {
				for i, id := range c.SiteIDs {
					if c.Actions[i] != "follow" {
						t.Errorf("re-sent %s with %q, want only follows re-sent", id, c.Actions[i])
					}
					resent = append(resent, event.SiteKey(id))
				}
			}
			slices.Sort(resent)
			if want := sorted(tt.wantResent...); !slices.Equal(resent, want) {
				t.Errorf("re-sent: got %v, want %v", resent, want)
			}
		})
	}
}
