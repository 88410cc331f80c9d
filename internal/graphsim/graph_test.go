package graphsim

import (
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
)

// wantEntry is an expected "value" element: code "" means a success entry.
type wantEntry struct {
	id, code string
}

func checkEntries(t *testing.T, got []entry, want []wantEntry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("entries: got %d %+v, want %d %+v", len(got), got, len(want), want)
	}
	for i, w := range want {
		g := got[i]
		gotCode := ""
		if g.Error != nil {
			gotCode = g.Error.Code
			if g.Error.ODataType != "#oneDrive.error" || g.Error.InnerError.Code != gotCode || g.Error.Message == "" {
				t.Errorf("entry %d error shape: got %+v, want @odata.type #oneDrive.error, innerError.code %q and a message", i, *g.Error, gotCode)
			}
		}
		if g.ID != w.id || gotCode != w.code {
			t.Errorf("entry %d: got id %q code %q, want id %q code %q", i, g.ID, gotCode, w.id, w.code)
		}
	}
}

func TestFollowedSites(t *testing.T) {
	upperA := "contoso.sharepoint.com,DA60E844-BA1D-49BC-B4D4-D5E36BAE9019,712A596E-90A1-49E3-9B48-BFA80BEE8740"
	anySite := "fabrikam.sharepoint.com,11111111-2222-3333-4444-555555555555,66666666-7777-8888-9999-000000000000"
	tests := []struct {
		name         string
		opts         Options
		before       []string // followed before the call
		op           string
		ids          []string
		wantStatus   int
		wantEntries  []wantEntry // nil: no body expected
		golden       string
		wantFollowed []string
	}{
		{
			name: "add all known", op: "add", ids: []string{siteA, siteB},
			wantStatus: http.StatusOK, wantEntries: []wantEntry{{siteA, ""}, {siteB, ""}},
			golden: "add-200.json", wantFollowed: []string{siteB, siteA},
		},
		{
			name: "add with unknown site", op: "add", ids: []string{siteUnknown, siteB},
			wantStatus: http.StatusMultiStatus, wantEntries: []wantEntry{{siteUnknown, "invalidRequest"}, {siteB, ""}},
			golden: "add-207.json", wantFollowed: []string{siteB},
		},
		{
			name: "add already followed is idempotent", before: []string{siteA}, op: "add", ids: []string{siteA},
			wantStatus: http.StatusOK, wantEntries: []wantEntry{{siteA, ""}}, wantFollowed: []string{siteA},
		},
		{
			name: "add malformed id", op: "add", ids: []string{"not-a-site-id", siteA},
			wantStatus: http.StatusMultiStatus, wantEntries: []wantEntry{{"not-a-site-id", "invalidRequest"}, {siteA, ""}},
			wantFollowed: []string{siteA},
		},
		{
			name: "add upper-case guids matches case-insensitively", op: "add", ids: []string{upperA},
			wantStatus: http.StatusOK, wantEntries: []wantEntry{{siteA, ""}}, wantFollowed: []string{siteA},
		},
		{
			name: "add duplicate ids answers once", op: "add", ids: []string{siteA, siteA},
			wantStatus: http.StatusOK, wantEntries: []wantEntry{{siteA, ""}}, wantFollowed: []string{siteA},
		},
		{
			name: "add any site when allowed", opts: Options{AllowAnySite: true}, op: "add", ids: []string{anySite},
			wantStatus: http.StatusOK, wantEntries: []wantEntry{{anySite, ""}}, wantFollowed: []string{anySite},
		},
		{
			name: "remove followed", before: []string{siteA, siteB}, op: "remove", ids: []string{siteA},
			wantStatus: http.StatusNoContent, wantFollowed: []string{siteB},
		},
		{
			name: "remove not followed is idempotent", op: "remove", ids: []string{siteA},
			wantStatus: http.StatusNoContent,
		},
		{
			name: "remove with unknown lists only failures", before: []string{siteA}, op: "remove", ids: []string{siteUnknown, siteA},
			wantStatus: http.StatusMultiStatus, wantEntries: []wantEntry{{siteUnknown, "invalidRequest"}},
			golden: "remove-207.json",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			if !opts.AllowAnySite {
				opts.Sites = []string{siteA, siteB}
			}
			s := newSim(t, opts)
			s.SetFollowed("Adele@contoso.com", tc.before...)
			got := call{op: tc.op, user: "Adele@contoso.com", ids: tc.ids, token: fetchToken(t, s)}.do(t, s)

			if got.status != tc.wantStatus {
				t.Fatalf("status: got %d, want %d (body %s)", got.status, tc.wantStatus, got.body)
			}
			if tc.wantEntries == nil {
				if len(got.body) != 0 {
					t.Errorf("body: got %q, want none", got.body)
				}
				if ct := got.header.Get("Content-Type"); ct != "" {
					t.Errorf("Content-Type: got %q, want none", ct)
				}
			} else {
				checkEntries(t, got.entries(t), tc.wantEntries)
				mt, _, err := mime.ParseMediaType(got.header.Get("Content-Type"))
				if err != nil || mt != "application/json" {
					t.Errorf("Content-Type: got %q (%v), want media type application/json", got.header.Get("Content-Type"), err)
				}
			}
			if tc.golden != "" {
				checkGolden(t, tc.golden, got.body)
			}
			if f := s.Followed("adele@CONTOSO.com"); !slices.Equal(f, tc.wantFollowed) {
				t.Errorf("Followed: got %q, want %q", f, tc.wantFollowed)
			}
			calls := s.Calls()
			if len(calls) != 1 {
				t.Fatalf("Calls: got %d, want 1", len(calls))
			}
			c := calls[0]
			if c.Op != tc.op || c.UserID != "Adele@contoso.com" || c.Status != tc.wantStatus || !slices.Equal(c.SiteIDs, tc.ids) || c.Early {
				t.Errorf("Call: got %+v, want op %s user Adele@contoso.com status %d ids %q not early", c, tc.op, tc.wantStatus, tc.ids)
			}
		})
	}
}

func TestRouting(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantOp     string
		wantUser   string // followed state expected for this user when status is 200
	}{
		{name: "escaped slash stays in the user id", path: "/v1.0/users/a%2Fb/followedSites/add", wantStatus: 200, wantOp: "add", wantUser: "a/b"},
		{name: "escaped route inside user id", path: "/v1.0/users/a%2FfollowedSites%2Fremove/followedSites/add", wantStatus: 200, wantOp: "add", wantUser: "a/followedSites/remove"},
		{name: "escaped dots", path: "/v1.0/users/..%2F..%2Fx/followedSites/add", wantStatus: 200, wantOp: "add", wantUser: "../../x"},
		{name: "escaped at sign", path: "/v1.0/users/adele%40contoso.com/followedSites/add", wantStatus: 200, wantOp: "add", wantUser: "adele@contoso.com"},
		{name: "segments are case-insensitive", path: "/V1.0/Users/u1/FollowedSites/Add", wantStatus: 200, wantOp: "add", wantUser: "u1"},
		{name: "raw slash in user id", path: "/v1.0/users/a/b/followedSites/add", wantStatus: 400},
		{name: "empty user", path: "/v1.0/users//followedSites/add", wantStatus: 400},
		{name: "trailing slash", path: "/v1.0/users/u1/followedSites/add/", wantStatus: 400},
		{name: "unknown operation", path: "/v1.0/users/u1/followedSites/patch", wantStatus: 400},
		{name: "wrong version", path: "/beta/users/u1/followedSites/add", wantStatus: 404},
		{name: "root", path: "/", wantStatus: 404},
		{name: "GET not allowed", method: http.MethodGet, path: "/v1.0/users/u1/followedSites/add", wantStatus: 405, wantOp: "add"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{Sites: []string{siteA}})
			got := call{method: tc.method, path: tc.path, ids: []string{siteA}, token: fetchToken(t, s)}.do(t, s)
			if got.status != tc.wantStatus {
				t.Fatalf("status: got %d, want %d (body %s)", got.status, tc.wantStatus, got.body)
			}
			if got.status >= 400 {
				if e := got.wholeError(t); e.Error.Code == "" || e.Error.Message == "" || e.Error.InnerError.RequestID == "" {
					t.Errorf("error body: got %s, want a Graph error with code, message and innerError.request-id", got.body)
				}
			}
			c := s.Calls()[0]
			if c.Op != tc.wantOp {
				t.Errorf("Call.Op: got %q, want %q", c.Op, tc.wantOp)
			}
			var wantUsers []string
			if tc.wantStatus == http.StatusOK {
				if c.UserID != tc.wantUser {
					t.Errorf("Call.UserID: got %q, want %q", c.UserID, tc.wantUser)
				}
				if f := s.Followed(tc.wantUser); !slices.Equal(f, []string{siteA}) {
					t.Errorf("Followed(%q): got %q, want %q", tc.wantUser, f, siteA)
				}
				wantUsers = []string{strings.ToLower(tc.wantUser)}
			}
			if u := s.Users(); !slices.Equal(u, wantUsers) {
				t.Errorf("Users: got %q, want %q", u, wantUsers)
			}
		})
	}
}

func TestMalformedBody(t *testing.T) {
	bodies := map[string]string{
		"empty":          "",
		"truncated":      `{"value":[{"id":`,
		"no value":       `{"ids":["x"]}`,
		"empty value":    `{"value":[]}`,
		"entry no id":    `{"value":[{}]}`,
		"entry empty id": `{"value":[{"id":""}]}`,
		"value not list": `{"value":"x"}`,
		"array":          `[{"id":"x"}]`,
		"trailing data":  `{"value":[{"id":"x"}]} {}`,
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			s := newSim(t, Options{Sites: []string{siteA}})
			c := call{op: "add", user: "u1", token: fetchToken(t, s), body: body}
			if body == "" {
				c.ids = nil
			}
			got := c.do(t, s)
			if got.status != http.StatusBadRequest {
				t.Fatalf("status: got %d, want 400 (body %s)", got.status, got.body)
			}
			if code := got.wholeError(t).Error.Code; code != "invalidRequest" {
				t.Errorf("code: got %q, want invalidRequest", code)
			}
			if u := s.Users(); len(u) != 0 {
				t.Errorf("Users: got %q, want none", u)
			}
		})
	}
}

func TestResponseHeaders(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}})
	tok := fetchToken(t, s)
	first := call{op: "add", user: "u1", ids: []string{siteA}, token: tok,
		header: map[string]string{"client-request-id": "abc-123", "User-Agent": "NONISV|Contoso|SiteFollow/1.0"}}.do(t, s)
	second := call{op: "remove", user: "u1", ids: []string{siteA}, token: tok}.do(t, s)
	third := call{op: "add", user: "u1", ids: []string{siteA}}.do(t, s) // unauthenticated

	for i, r := range []result{first, second, third} {
		if !validGUID(r.header.Get("request-id")) {
			t.Errorf("call %d request-id: got %q, want a GUID", i, r.header.Get("request-id"))
		}
		if r.header.Get("client-request-id") == "" {
			t.Errorf("call %d client-request-id: got none, want one", i)
		}
	}
	if got := first.header.Get("client-request-id"); got != "abc-123" {
		t.Errorf("client-request-id echo: got %q, want abc-123", got)
	}
	if first.header.Get("request-id") == second.header.Get("request-id") {
		t.Errorf("request-id: got %q twice, want fresh ids", first.header.Get("request-id"))
	}
	e := third.wholeError(t)
	if e.Error.InnerError.RequestID != third.header.Get("request-id") || e.Error.InnerError.ClientRequestID != third.header.Get("client-request-id") || e.Error.InnerError.Date == "" {
		t.Errorf("innerError: got %+v, want request-id, client-request-id matching headers and a date", e.Error.InnerError)
	}
	c := s.Calls()[0]
	if c.ClientRequestID != "abc-123" || c.UserAgent != "NONISV|Contoso|SiteFollow/1.0" {
		t.Errorf("Call: got client-request-id %q user agent %q, want abc-123 and NONISV|Contoso|SiteFollow/1.0", c.ClientRequestID, c.UserAgent)
	}
}

func TestConcurrentCalls(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA, siteB}})
	tok := fetchToken(t, s)
	const workers, rounds = 6, 15
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			user := "user" + string(rune('a'+w))
			for range rounds {
				for _, op := range []string{"add", "remove", "add"} {
					r := call{op: op, user: user, ids: []string{siteA, siteB}, token: tok}.do(t, s)
					if r.status != http.StatusOK && r.status != http.StatusNoContent {
						t.Errorf("%s %s: got %d", op, user, r.status)
					}
				}
				// Reads race with writes on purpose, for -race.
				s.Followed(user)
				s.Calls()
			}
		})
	}
	wg.Wait()
	if got, want := s.CallCount(), workers*rounds*3; got != want {
		t.Errorf("CallCount: got %d, want %d", got, want)
	}
	if got := s.Users(); len(got) != workers {
		t.Errorf("Users: got %q, want %d users", got, workers)
	}
	for _, u := range s.Users() {
		if f := s.Followed(u); !slices.Equal(f, []string{siteB, siteA}) {
			t.Errorf("Followed(%s): got %q, want both sites", u, f)
		}
	}
}
