package graphclient

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// maxRefreshMargin is how long before expiry a cached token is replaced, so
// a token never expires on its way to Graph.
const maxRefreshMargin = 2 * time.Minute

// tokenCache keeps the current Graph token for all calls of a Client, so
// the credential is asked only when the token is about to expire or Graph
// rejected it.
type tokenCache struct {
	cred  azcore.TokenCredential
	scope string
	now   func() time.Time
	// failed is told of each token the credential could not produce.
	failed func()
	// sem serialises acquisition (one request to Entra, not one per
	// waiting call) while still letting a waiter give up with its context.
	sem chan struct{}

	mu        sync.Mutex
	token     string
	refreshAt time.Time
}

func newTokenCache(cred azcore.TokenCredential, scope string, now func() time.Time, failed func()) *tokenCache {
	return &tokenCache{cred: cred, scope: scope, now: now, failed: failed, sem: make(chan struct{}, 1)}
}

func (t *tokenCache) cached() (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token == "" || !t.now().Before(t.refreshAt) {
		return "", false
	}
	return t.token, true
}

func (t *tokenCache) lock(ctx context.Context) error {
	select {
	case t.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("graphclient: wait for token: %w", ctx.Err())
	}
}

func (t *tokenCache) unlock() { <-t.sem }

// get returns the cached token or obtains one.
func (t *tokenCache) get(ctx context.Context) (string, error) {
	if tok, ok := t.cached(); ok {
		return tok, nil
	}
	if err := t.lock(ctx); err != nil {
		return "", err
	}
	defer t.unlock()
	if tok, ok := t.cached(); ok {
		return tok, nil
	}
	return t.fetch(ctx, "")
}

// refresh replaces rejected, the token Graph answered 401 to, by a newly
// issued one. When another call already replaced it, that replacement is
// returned without asking Entra again, so a burst of 401s costs one token
// request.
//
// A plain GetToken would not do: azidentity's confidential client asks MSAL
// for a cached token first (AcquireTokenSilent) and would hand back the
// rejected token until it expires. MSAL skips its cache when the request
// carries claims (base.AcquireTokenSilent ignores cached access tokens when
// Claims != "", and AcquireTokenByCredential goes straight to the token
// endpoint), then caches the new token in place of the old one. So refresh
// passes the claims of Graph's challenge when the 401 carried one (CAE), and
// otherwise the same kind of claims request CAE challenges make: an access
// token not valid before now.
func (t *tokenCache) refresh(ctx context.Context, rejected, claims string) (string, error) {
	if err := t.lock(ctx); err != nil {
		return "", err
	}
	defer t.unlock()
	if tok, ok := t.cached(); ok && tok != rejected {
		return tok, nil
	}
	t.mu.Lock()
	t.token = ""
	t.mu.Unlock()
	if claims == "" {
		claims = fmt.Sprintf(`{"access_token":{"nbf":{"essential":true,"value":"%d"}}}`, t.now().Unix())
	}
	return t.fetch(ctx, claims)
}

func (t *tokenCache) fetch(ctx context.Context, claims string) (string, error) {
	at, err := t.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{t.scope}, Claims: claims})
	if err != nil || at.Token == "" {
		t.failed()
	}
	if err != nil {
		return "", fmt.Errorf("graphclient: get token for %s: %w", t.scope, err)
	}
	if at.Token == "" {
		return "", fmt.Errorf("graphclient: get token for %s: credential returned an empty token", t.scope)
	}
	now := t.now()
	// Short-lived tokens (test authorities) are kept for half their life
	// rather than not at all.
	margin := min(maxRefreshMargin, at.ExpiresOn.Sub(now)/2)
	t.mu.Lock()
	t.token = at.Token
	t.refreshAt = at.ExpiresOn.Add(-margin)
	t.mu.Unlock()
	return at.Token, nil
}

// parseClaimsChallenge extracts the claims of a Bearer challenge such as
// `Bearer realm="", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsi..."`.
// It returns "" when there is none or it does not decode to a JSON object.
func parseClaimsChallenge(headers []string) string {
	for _, h := range headers {
		i := strings.Index(strings.ToLower(h), "claims=\"")
		if i < 0 {
			continue
		}
		rest := h[i+len(`claims="`):]
		end := strings.IndexByte(rest, '"')
		if end < 0 {
			continue
		}
		raw := rest[:end]
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			b, err := enc.DecodeString(raw)
			if err != nil {
				continue
			}
			var obj map[string]any
			if json.Unmarshal(b, &obj) == nil {
				return string(b)
			}
		}
	}
	return ""
}
