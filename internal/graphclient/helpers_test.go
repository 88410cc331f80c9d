package graphclient

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/rs/zerolog"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

const testUserAgent = "NONISV|Contoso|sitefollow/0.0.0-test"

// siteID returns a well-formed, distinct site id.
func siteID(n int) string {
	return fmt.Sprintf("contoso.sharepoint.com,%08x-1111-4111-8111-111111111111,%08x-2222-4222-8222-222222222222", n, n)
}

func siteIDs(from, to int) []string {
	var ids []string
	for n := from; n <= to; n++ {
		ids = append(ids, siteID(n))
	}
	return ids
}

// newSim starts a graphsim knowing sites 1..20.
func newSim(t testing.TB) *graphsim.Server {
	t.Helper()
	sim, err := graphsim.New(graphsim.Options{Sites: siteIDs(1, 20)})
	if err != nil {
		t.Fatalf("graphsim.New: %v", err)
	}
	t.Cleanup(sim.Close)
	return sim
}

// simCredential is a real azidentity credential fetching tokens from the
// sim's TLS authority.
func simCredential(t testing.TB, sim *graphsim.Server) azcore.TokenCredential {
	t.Helper()
	cred, err := NewCredential(CredentialConfig{
		TenantID:      sim.TenantID(),
		ClientID:      sim.ClientID(),
		ClientSecret:  sim.ClientSecret(),
		AuthorityHost: sim.AuthorityURL(),
		HTTPClient:    sim.HTTPClient(),
	})
	if err != nil {
		t.Fatalf("NewCredential: %v", err)
	}
	return cred
}

// testConfig returns a Config with tiny backoff intervals so retries are
// fast; edit may adjust it.
func testConfig(t *testing.T, baseURL string, cred azcore.TokenCredential, edit func(*Config)) Config {
	t.Helper()
	cfg := Config{
		BaseURL:         baseURL,
		UserAgent:       testUserAgent,
		Credential:      cred,
		MaxAttempts:     5,
		InitialInterval: time.Millisecond,
		MaxInterval:     5 * time.Millisecond,
		RequestTimeout:  10 * time.Second,
		Logger:          zerolog.New(zerolog.NewTestWriter(t)),
	}
	if edit != nil {
		edit(&cfg)
	}
	return cfg
}

func newSimClient(t *testing.T, sim *graphsim.Server, edit func(*Config)) *Client {
	t.Helper()
	c, err := New(testConfig(t, sim.GraphURL(), simCredential(t, sim), edit))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// want is the expected verdict of one site.
type want struct {
	outcome  Outcome
	code     string // "" to skip
	status   int    // 0 to skip
	attempts int    // 0 to skip
}

func checkResults(t *testing.T, ids []string, got []SiteResult, wants []want) {
	t.Helper()
	if len(got) != len(ids) {
		t.Fatalf("got %d results, want %d", len(got), len(ids))
	}
	for i, w := range wants {
		g := got[i]
		if g.SiteID != ids[i] {
			t.Errorf("result %d: SiteID = %q, want %q", i, g.SiteID, ids[i])
		}
		if g.Outcome != w.outcome {
			t.Errorf("result %d (%s): outcome = %v (err %+v), want %v", i, ids[i], g.Outcome, g.Err, w.outcome)
			continue
		}
		if w.outcome == Applied {
			if g.Err != nil {
				t.Errorf("result %d: applied with err %+v", i, g.Err)
			}
		} else if g.Err == nil {
			t.Errorf("result %d: %v without err", i, g.Outcome)
			continue
		}
		if w.code != "" && g.Err.Code != w.code {
			t.Errorf("result %d: code = %q, want %q", i, g.Err.Code, w.code)
		}
		if w.status != 0 && g.Err.HTTPStatus != w.status {
			t.Errorf("result %d: HTTPStatus = %d, want %d", i, g.Err.HTTPStatus, w.status)
		}
		if w.attempts != 0 && g.Attempts != w.attempts {
			t.Errorf("result %d: attempts = %d, want %d", i, g.Attempts, w.attempts)
		}
	}
}

func allApplied(n int) []want {
	w := make([]want, n)
	for i := range w {
		w[i] = want{outcome: Applied}
	}
	return w
}

// waitFor polls cond with a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func lower(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = strings.ToLower(id)
	}
	return out
}

// syncBuffer is a goroutine-safe log sink. (testkit.SyncBuffer cannot be
// used here: testkit imports bench, which imports this package.)
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// countingCredential is a hand-written fake for cases the sim cannot
// produce (a token Graph keeps refusing).
type countingCredential struct {
	mu     sync.Mutex
	calls  int
	claims []string
}

func (c *countingCredential) GetToken(_ context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.claims = append(c.claims, opts.Claims)
	return azcore.AccessToken{Token: fmt.Sprintf("fake-token-%d", c.calls), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func (c *countingCredential) snapshot() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, append([]string(nil), c.claims...)
}
