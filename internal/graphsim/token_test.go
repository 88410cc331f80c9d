package graphsim

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

const graphScope = "https://graph.microsoft.com/.default"

func newCredential(t *testing.T, s *Server, secret string) *azidentity.ClientSecretCredential {
	t.Helper()
	cred, err := azidentity.NewClientSecretCredential(s.TenantID(), s.ClientID(), secret, &azidentity.ClientSecretCredentialOptions{
		ClientOptions: azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: s.AuthorityURL()},
			Transport: s.HTTPClient(),
		},
		DisableInstanceDiscovery: true,
	})
	if err != nil {
		t.Fatalf("NewClientSecretCredential: %v", err)
	}
	return cred
}

func TestAzidentityToken(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	tok, err := newCredential(t, s, s.ClientSecret()).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphScope}})
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if tok.Token == "" || !tok.ExpiresOn.After(time.Now()) {
		t.Errorf("token: got %q expiring %v, want a token expiring in the future", tok.Token, tok.ExpiresOn)
	}
	if got := (call{op: "add", user: "u1", ids: []string{siteA}, token: tok.Token}).do(t, s); got.status != http.StatusOK {
		t.Errorf("Graph call with azidentity token: got %d, want 200 (body %s)", got.status, got.body)
	}
	if s.TokenRequests() != 1 {
		t.Errorf("TokenRequests: got %d, want 1", s.TokenRequests())
	}
	if got := s.TokenScopes(); len(got) != 1 || !slices.Contains([]string{graphScope, graphScope + " openid offline_access profile"}, got[0]) {
		t.Errorf("TokenScopes: got %q, want [%q]", got, graphScope)
	}
	if s.CallCount() != 1 {
		t.Errorf("CallCount: got %d, want 1 (token calls are not Graph calls)", s.CallCount())
	}
}

func TestAzidentityWrongSecret(t *testing.T) {
	s := newSim(t, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err := newCredential(t, s, "wrong").GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphScope}})
	var authErr *azidentity.AuthenticationFailedError
	if !errors.As(err, &authErr) {
		t.Fatalf("GetToken error: got %v, want *azidentity.AuthenticationFailedError", err)
	}
	if authErr.RawResponse == nil || authErr.RawResponse.StatusCode != http.StatusUnauthorized {
		t.Errorf("raw response: got %+v, want status 401", authErr.RawResponse)
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	valid := func(s *Server) url.Values {
		return url.Values{
			"grant_type":    {"client_credentials"},
			"client_id":     {s.ClientID()},
			"client_secret": {s.ClientSecret()},
			"scope":         {graphScope},
		}
	}
	tests := []struct {
		name       string
		tenant     string // default the sim's
		edit       func(url.Values)
		wantStatus int
		wantError  string
	}{
		{name: "valid", edit: func(url.Values) {}, wantStatus: 200},
		{name: "wrong secret", edit: func(v url.Values) { v.Set("client_secret", "nope") }, wantStatus: 401, wantError: "invalid_client"},
		{name: "wrong client", edit: func(v url.Values) { v.Set("client_id", "nope") }, wantStatus: 400, wantError: "unauthorized_client"},
		{name: "wrong grant", edit: func(v url.Values) { v.Set("grant_type", "password") }, wantStatus: 400, wantError: "unsupported_grant_type"},
		{name: "no scope", edit: func(v url.Values) { v.Del("scope") }, wantStatus: 400, wantError: "invalid_request"},
		{name: "delegated scope", edit: func(v url.Values) { v.Set("scope", "Sites.ReadWrite.All") }, wantStatus: 400, wantError: "invalid_scope"},
		{name: "wrong tenant", tenant: "other-tenant", edit: func(url.Values) {}, wantStatus: 400, wantError: "invalid_tenant"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{TenantID: "T1", ClientID: "C1", ClientSecret: "S1"})
			form := valid(s)
			tc.edit(form)
			tenant := tc.tenant
			if tenant == "" {
				tenant = "t1" // tenants match case-insensitively
			}
			resp, err := s.HTTPClient().PostForm(s.AuthorityURL()+tenant+"/oauth2/v2.0/token", form)
			if err != nil {
				t.Fatalf("post: %v", err)
			}
			defer closeBody(t, resp)
			var out struct {
				Error       string `json:"error"`
				AccessToken string `json:"access_token"`
				TokenType   string `json:"token_type"`
				ExpiresIn   int    `json:"expires_in"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if resp.StatusCode != tc.wantStatus || out.Error != tc.wantError {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, out.Error, tc.wantStatus, tc.wantError)
			}
			if tc.wantStatus == http.StatusOK && (out.AccessToken == "" || out.TokenType != "Bearer" || out.ExpiresIn != 3600) {
				t.Errorf("token: got %+v, want a Bearer token expiring in 3600 s", out)
			}
			if s.TokenRequests() != 1 {
				t.Errorf("TokenRequests: got %d, want 1", s.TokenRequests())
			}
		})
	}
}

func TestOpenIDConfiguration(t *testing.T) {
	s := newSim(t, Options{})
	resp, err := s.HTTPClient().Get(s.AuthorityURL() + s.TenantID() + "/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	defer closeBody(t, resp)
	var cfg map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&cfg); err != nil {
		t.Fatalf("decode: %v", err)
	}
	base := s.AuthorityURL() + s.TenantID() + "/"
	want := map[string]string{
		"issuer":                 base + "v2.0",
		"token_endpoint":         base + "oauth2/v2.0/token",
		"authorization_endpoint": base + "oauth2/v2.0/authorize",
		"jwks_uri":               base + "discovery/v2.0/keys",
	}
	for k, v := range want {
		if cfg[k] != v {
			t.Errorf("%s: got %v, want %s", k, cfg[k], v)
		}
	}
}

func TestAuthorization(t *testing.T) {
	tests := []struct {
		name   string
		header func(s *Server) string // Authorization header value
	}{
		{name: "missing", header: func(*Server) string { return "" }},
		{name: "not bearer", header: func(*Server) string { return "Basic dXNlcjpwYXNz" }},
		{name: "empty bearer", header: func(*Server) string { return "Bearer " }},
		{name: "unknown token", header: func(*Server) string { return "Bearer made-up" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{Sites: []string{siteA}})
			c := call{op: "add", user: "u1", ids: []string{siteA}}
			if h := tc.header(s); h != "" {
				c.header = map[string]string{"Authorization": h}
			}
			got := c.do(t, s)
			checkUnauthorized(t, got)
			if len(s.Users()) != 0 {
				t.Errorf("Users: got %q, want none", s.Users())
			}
		})
	}
}

func checkUnauthorized(t *testing.T, got result) {
	t.Helper()
	if got.status != http.StatusUnauthorized {
		t.Fatalf("status: got %d, want 401 (body %s)", got.status, got.body)
	}
	if code := got.wholeError(t).Error.Code; code != "InvalidAuthenticationToken" {
		t.Errorf("code: got %q, want InvalidAuthenticationToken", code)
	}
	if got.header.Get("WWW-Authenticate") == "" {
		t.Error("WWW-Authenticate: got none, want a Bearer challenge")
	}
}

func TestRevokeTokens(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}})
	old := fetchToken(t, s)
	c := call{op: "add", user: "u1", ids: []string{siteA}, token: old}
	if got := c.do(t, s); got.status != http.StatusOK {
		t.Fatalf("before revoke: got %d, want 200", got.status)
	}
	s.RevokeTokens()
	checkUnauthorized(t, c.do(t, s))

	c.token = fetchToken(t, s)
	if got := c.do(t, s); got.status != http.StatusOK {
		t.Errorf("new token after revoke: got %d, want 200", got.status)
	}
}

func TestExpiredToken(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}, TokenLifetime: time.Nanosecond})
	checkUnauthorized(t, call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}.do(t, s))
}

func TestFailTokensAndIssuedTokens(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s.FailTokens(1, http.StatusBadRequest)
	if _, err := newCredential(t, s, s.ClientSecret()).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphScope}}); err == nil {
		t.Fatal("GetToken with FailTokens pending: got a token, want an error")
	}
	if got := s.IssuedTokens(); len(got) != 0 {
		t.Errorf("IssuedTokens after a failed request: got %q, want none", got)
	}
	tok, err := newCredential(t, s, s.ClientSecret()).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{graphScope}})
	if err != nil {
		t.Fatalf("GetToken once FailTokens is used up: %v", err)
	}
	s.RevokeTokens()
	if got := s.IssuedTokens(); !slices.Equal(got, []string{tok.Token}) {
		t.Errorf("IssuedTokens after revocation: got %q, want [%q]", got, tok.Token)
	}
	if n := s.TokenRequests(); n != 2 {
		t.Errorf("TokenRequests: got %d, want 2", n)
	}
}
