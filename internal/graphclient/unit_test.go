package graphclient

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{in: "1", want: time.Second, wantOK: true},
		{in: " 41 ", want: 41 * time.Second, wantOK: true},
		{in: "2.128", want: 2128 * time.Millisecond, wantOK: true},
		{in: "0", want: 0, wantOK: true},
		{in: now.Add(315 * time.Second).Format(http.TimeFormat), want: 315 * time.Second, wantOK: true},
		{in: now.Add(-time.Minute).Format(http.TimeFormat), want: 0, wantOK: true},
		{in: "Wed, 01 May 2024 12:00:05 GMT", want: 5 * time.Second, wantOK: true},
		{in: now.Add(10 * 365 * 24 * time.Hour).Format(http.TimeFormat), want: maxParsedRetryAfter, wantOK: true},
		{in: "315360000", want: maxParsedRetryAfter, wantOK: true},
		{in: "1e300", want: maxParsedRetryAfter, wantOK: true},
		{in: "", wantOK: false},
		{in: "-1", wantOK: false},
		{in: "soon", wantOK: false},
		{in: "NaN", wantOK: false},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if ok != tt.wantOK || got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestParseClaimsChallenge(t *testing.T) {
	claims := `{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}`
	std := base64.StdEncoding.EncodeToString([]byte(claims))
	raw := base64.RawURLEncoding.EncodeToString([]byte(claims))
	tests := []struct {
		name    string
		headers []string
		want    string
	}{
		{name: "cae challenge", headers: []string{`Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="` + std + `"`}, want: claims},
		{name: "raw url encoding", headers: []string{`Bearer claims="` + raw + `", error="insufficient_claims"`}, want: claims},
		{name: "second header", headers: []string{`Basic realm="x"`, `Bearer claims="` + std + `"`}, want: claims},
		{name: "no claims", headers: []string{`Bearer realm="", client_id="00000003-0000-0000-c000-000000000000"`}, want: ""},
		{name: "not json", headers: []string{`Bearer claims="` + base64.StdEncoding.EncodeToString([]byte("nope")) + `"`}, want: ""},
		{name: "unterminated", headers: []string{`Bearer claims="abc`}, want: ""},
		{name: "none", want: ""},
	}
	for _, tt := range tests {
		if got := parseClaimsChallenge(tt.headers); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestGateNeverMovesBack(t *testing.T) {
	now := time.Now()
	g := newGate(func() time.Time { return now })
	g.push(time.Minute)
	g.push(time.Second)
	if got, want := g.until(), now.Add(time.Minute); !got.Equal(want) {
		t.Errorf("until = %v, want %v", got, want)
	}
	_, err := g.wait(context.Background(), time.Second)
	var tooLong *gateTooLongError
	if !errors.As(err, &tooLong) || tooLong.wait != time.Minute {
		t.Errorf("wait = %v, want a gateTooLongError of 1m", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.wait(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("wait with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestNewCredentialValidates(t *testing.T) {
	full := CredentialConfig{TenantID: "t", ClientID: "c", ClientSecret: "s"}
	tests := []struct {
		name    string
		edit    func(*CredentialConfig)
		wantErr []string
	}{
		{name: "complete", edit: func(*CredentialConfig) {}},
		{name: "custom https authority", edit: func(c *CredentialConfig) { c.AuthorityHost = "https://127.0.0.1:8443/" }},
		{name: "no tenant", edit: func(c *CredentialConfig) { c.TenantID = "" }, wantErr: []string{"AZURE_TENANT_ID"}},
		{name: "nothing", edit: func(c *CredentialConfig) { *c = CredentialConfig{} }, wantErr: []string{"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"}},
		{name: "no secret", edit: func(c *CredentialConfig) { c.ClientSecret = "" }, wantErr: []string{"AZURE_CLIENT_SECRET"}},
		{name: "http authority", edit: func(c *CredentialConfig) { c.AuthorityHost = "http://login.example.com/" }, wantErr: []string{"http://login.example.com/", "https"}},
		{name: "authority with credentials", edit: func(c *CredentialConfig) { c.AuthorityHost = "https://alice:hunter2@login.example.com/" },
			wantErr: []string{`"https://redacted@login.example.com/"`, "without credentials"}},
		{name: "unparsable authority with credentials", edit: func(c *CredentialConfig) { c.AuthorityHost = "https://alice:hunter2@login.example.com:port/" },
			wantErr: []string{`"[unparsable URL]"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := full
			tt.edit(&cfg)
			cred, err := NewCredential(cfg)
			if len(tt.wantErr) == 0 {
				if err != nil || cred == nil {
					t.Fatalf("NewCredential = %v, want a credential", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("NewCredential succeeded, want an error naming %v", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows the authority's credentials", err)
			}
			if strings.Contains(err.Error(), "s\"") && cfg.ClientSecret != "" {
				t.Errorf("error %q may contain the secret", err)
			}
		})
	}
}

func TestIsPublicAuthority(t *testing.T) {
	tests := map[string]bool{
		"https://login.microsoftonline.com/":     true,
		"https://LOGIN.microsoftonline.us":       true,
		"https://login.chinacloudapi.cn/":        true,
		"https://127.0.0.1:8443/":                false,
		"https://login.microsoftonline.com.evil": false,
		"https://adfs.contoso.com/adfs/":         false,
	}
	for raw, want := range tests {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("parse %q: %v", raw, err)
		}
		if got := isPublicAuthority(u); got != want {
			t.Errorf("isPublicAuthority(%q) = %v, want %v", raw, got, want)
		}
	}
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[Outcome]string{Applied: "applied", Rejected: "rejected", Unresolved: "unresolved", 0: "outcome(0)"} {
		if got := o.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(o), got, want)
		}
	}
}

// FuzzParseRetryAfter holds every Retry-After or RateLimit-Reset value,
// whatever Graph (or whoever answers) sends, to a wait between zero and
// maxParsedRetryAfter.
func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, seed := range []string{"1", "2.128", "-1", "NaN", "+Inf", "1e300", "315360000",
		now.Add(10 * 365 * 24 * time.Hour).Format(http.TimeFormat), "Wed, 01 May 2024 12:00:05 GMT",
		"Monday, 01-May-34 12:00:05 GMT", "Wed May  1 12:00:05 2124"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, ok := parseRetryAfter(v, now)
		if !ok && got != 0 {
			t.Errorf("parseRetryAfter(%q): got %v with ok false, want 0", v, got)
		}
		if got < 0 || got > maxParsedRetryAfter {
			t.Errorf("parseRetryAfter(%q): got %v, want between 0 and %v", v, got, maxParsedRetryAfter)
		}
	})
}
