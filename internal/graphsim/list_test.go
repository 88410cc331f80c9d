package graphsim

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestListFollowedSites(t *testing.T) {
	t.Parallel()
	anySite := "fabrikam.sharepoint.com,11111111-2222-3333-4444-555555555555,66666666-7777-8888-9999-000000000000"
	tests := []struct {
		name       string
		opts       Options
		follow     []string // followed through add before the GET
		path       string
		noToken    bool
		wantStatus int
		wantIDs    []string
	}{
		{name: "followed sites sorted", opts: Options{Sites: []string{siteA, siteB}}, follow: []string{siteA, siteB},
			path: "/v1.0/users/Adele@contoso.com/followedSites", wantStatus: http.StatusOK, wantIDs: []string{siteB, siteA}},
		{name: "any site", opts: Options{AllowAnySite: true}, follow: []string{anySite},
			path: "/v1.0/users/adele@contoso.com/followedSites", wantStatus: http.StatusOK, wantIDs: []string{anySite}},
		{name: "nothing followed", path: "/v1.0/users/nobody@contoso.com/followedSites", wantStatus: http.StatusOK, wantIDs: []string{}},
		{name: "segments case-insensitive", opts: Options{Sites: []string{siteA}}, follow: []string{siteA},
			path: "/V1.0/Users/adele%40contoso.com/FollowedSites", wantStatus: http.StatusOK, wantIDs: []string{siteA}},
		{name: "token required", path: "/v1.0/users/adele@contoso.com/followedSites", noToken: true, wantStatus: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, tt.opts)
			token := fetchToken(t, s)
			if tt.follow != nil {
				if got := (call{op: "add", user: "adele@contoso.com", ids: tt.follow, token: token}).do(t, s); got.status != http.StatusOK {
					t.Fatalf("add: got status %d, want 200: %s", got.status, got.body)
				}
			}
			calls := s.CallCount()
			c := call{method: http.MethodGet, path: tt.path, token: token}
			if tt.noToken {
				c.token = ""
			}
			got := c.do(t, s)
			if got.status != tt.wantStatus {
				t.Fatalf("GET %s: got status %d, want %d: %s", tt.path, got.status, tt.wantStatus, got.body)
			}
			if s.CallCount() != calls {
				t.Errorf("CallCount after GET: got %d, want %d (reads are not recorded)", s.CallCount(), calls)
			}
			if tt.wantIDs == nil {
				return
			}
			var body struct {
				Value []struct {
					ID     string `json:"id"`
					WebURL string `json:"webUrl"`
				} `json:"value"`
			}
			if err := json.Unmarshal(got.body, &body); err != nil {
				t.Fatalf("decode %s: %v", got.body, err)
			}
			if body.Value == nil {
				t.Fatalf("body %s: want a value array", got.body)
			}
			ids := []string{}
			for _, v := range body.Value {
				ids = append(ids, v.ID)
				if !strings.HasPrefix(v.WebURL, "https://") {
					t.Errorf("site %s webUrl: got %q, want an https URL", v.ID, v.WebURL)
				}
			}
			if !slices.Equal(ids, tt.wantIDs) {
				t.Errorf("ids: got %q, want %q", ids, tt.wantIDs)
			}
		})
	}
}

func TestListUnknownUser(t *testing.T) {
	t.Parallel()
	s := newSim(t, Options{})
	s.UnknownUser("ghost@contoso.com")
	got := call{method: http.MethodGet, path: "/v1.0/users/ghost@contoso.com/followedSites", token: fetchToken(t, s)}.do(t, s)
	if got.status != http.StatusNotFound {
		t.Fatalf("status: got %d, want 404: %s", got.status, got.body)
	}
	if code := got.wholeError(t).Error.Code; code != "Request_ResourceNotFound" {
		t.Errorf("error code: got %q, want Request_ResourceNotFound", code)
	}
}

func TestListenAddresses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{name: "defaults", opts: Options{}},
		{name: "explicit loopback", opts: Options{GraphAddr: "127.0.0.1:0", AuthorityAddr: "localhost:0"}},
		{name: "ipv4 wildcard refused", opts: Options{GraphAddr: "0.0.0.0:0"}, wantErr: "option GraphAddr"},
		{name: "remote host refused", opts: Options{AuthorityAddr: "192.0.2.1:443"}, wantErr: "option AuthorityAddr"},
		{name: "no port refused", opts: Options{GraphAddr: "127.0.0.1"}, wantErr: "option GraphAddr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := New(tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("New: got no error, want one mentioning %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New error: got %q, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}
