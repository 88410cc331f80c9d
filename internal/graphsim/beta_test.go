package graphsim

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// betaBody is a followingSites PATCH body; pairs are id, action, id, action...
func betaBody(pairs ...string) string {
	var b strings.Builder
	b.WriteString(`{"value":[`)
	for i := 0; i+1 < len(pairs); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"id":"` + pairs[i] + `","@oneDrive.action":"` + pairs[i+1] + `"}`)
	}
	b.WriteString(`]}`)
	return b.String()
}

func TestFollowingSitesPatch(t *testing.T) {
	betaPath := "/beta/users/" + url.PathEscape("Adele@contoso.com") + "/followingSites"
	tests := []struct {
		name         string
		method       string
		body         string
		throttle     bool
		wantStatus   int
		wantEntries  []wantEntry // nil: not checked
		wantNames    []bool      // per entry: a full site object (with a name) rather than {"id"}
		wantFollowed []string
		wantIDs      []string
		wantActions  []string
	}{
		{
			// The reference page's own request.
			name: "200 mixed", method: http.MethodPatch, body: betaBody(siteA, "follow", siteB, "unfollow"),
			wantStatus: http.StatusOK, wantEntries: []wantEntry{{siteA, ""}, {siteB, ""}}, wantNames: []bool{true, false},
			wantFollowed: []string{siteA},
			wantIDs:      []string{siteA, siteB}, wantActions: []string{"follow", "unfollow"},
		},
		{
			name: "207 lists only failures", method: http.MethodPatch, body: betaBody(siteUnknown, "follow", siteA, "follow", siteB, "unfollow"),
			wantStatus: http.StatusMultiStatus, wantEntries: []wantEntry{{siteUnknown, "invalidRequest"}},
			wantFollowed: []string{siteA},
			wantIDs:      []string{siteUnknown, siteA, siteB}, wantActions: []string{"follow", "follow", "unfollow"},
		},
		{
			name: "throttled like any call", method: http.MethodPatch, body: betaBody(siteA, "follow"), throttle: true,
			wantStatus: http.StatusTooManyRequests, wantFollowed: []string{siteB},
			wantIDs: []string{siteA}, wantActions: []string{"follow"},
		},
		{
			name: "POST refused", method: http.MethodPost, body: betaBody(siteA, "follow"),
			wantStatus: http.StatusMethodNotAllowed, wantFollowed: []string{siteB},
		},
		{
			name: "entry without action", method: http.MethodPatch, body: idsBody(t, siteA),
			wantStatus: http.StatusBadRequest, wantFollowed: []string{siteB}, wantIDs: []string{},
		},
		{
			name: "unknown action", method: http.MethodPatch, body: betaBody(siteA, "follow", siteB, "like"),
			wantStatus: http.StatusBadRequest, wantFollowed: []string{siteB},
			wantIDs: []string{siteA}, wantActions: []string{"follow"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, Options{Sites: []string{siteA, siteB}})
			s.SetFollowed("Adele@contoso.com", siteB)
			if tc.throttle {
				s.Throttle(1, "1")
			}
			got := call{method: tc.method, path: betaPath, body: tc.body, token: fetchToken(t, s)}.do(t, s)

			if got.status != tc.wantStatus {
				t.Fatalf("status: got %d, want %d (body %s)", got.status, tc.wantStatus, got.body)
			}
			if tc.method == http.MethodPost {
				if allow := got.header.Get("Allow"); allow != http.MethodPatch {
					t.Errorf("Allow: got %q, want PATCH", allow)
				}
			}
			if tc.wantEntries != nil {
				entries := got.entries(t)
				checkEntries(t, entries, tc.wantEntries)
				for i, full := range tc.wantNames {
					if i < len(entries) && (entries[i].Name != "") != full {
						t.Errorf("entry %d: name %q, want a full site object %v", i, entries[i].Name, full)
					}
				}
			}
			if f := s.Followed("adele@contoso.com"); !slices.Equal(f, tc.wantFollowed) {
				t.Errorf("Followed: got %q, want %q", f, tc.wantFollowed)
			}
			calls := s.Calls()
			if len(calls) != 1 {
				t.Fatalf("Calls: got %d, want 1", len(calls))
			}
			c := calls[0]
			if c.Op != OpFollowingSites || c.UserID != "Adele@contoso.com" || c.Status != tc.wantStatus {
				t.Errorf("Call: got %+v, want op %s user Adele@contoso.com status %d", c, OpFollowingSites, tc.wantStatus)
			}
			if tc.wantIDs != nil && (!slices.Equal(c.SiteIDs, tc.wantIDs) || !slices.Equal(c.Actions, tc.wantActions)) {
				t.Errorf("Call: ids %q actions %q, want %q %q", c.SiteIDs, c.Actions, tc.wantIDs, tc.wantActions)
			}
		})
	}
}
