// Package graphclient follows and unfollows SharePoint sites on behalf of
// users through Microsoft Graph (POST /v1.0/users/{id}/followedSites/add and
// .../remove) and obtains the app-only Entra tokens those calls need. With
// APIBetaFollowingSites it speaks the older beta PATCH
// /beta/users/{id}/followingSites instead, follows and unfollows mixed in
// one call (ApplyMixed), and reads its answers by the same rules.
//
// It is the only code in sitefollow that talks to Graph or to Entra. Apply
// turns every Graph answer into one verdict per requested site: Applied only
// when Graph confirmed the site, Rejected when Graph refused it for good
// (dead-letter), Unresolved when the answer is still open after the in-process
// retry budget (the caller redelivers later). Throttling is honoured
// app-wide: one gate in the Client holds back every call while Graph asks
// for a pause.
package graphclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"
)

// Config configures a Client. Zero values select the documented defaults.
type Config struct {
	// BaseURL is Graph's root, e.g. https://graph.microsoft.com. It must be
	// https, or http for a loopback host (tests and local simulators).
	BaseURL string
	// UserAgent is sent verbatim, e.g. "NONISV|Contoso|sitefollow/1.2.3";
	// Graph throttles undecorated traffic first. Default DefaultUserAgent.
	UserAgent string
	// Credential issues the app-only tokens. Required.
	Credential azcore.TokenCredential
	// Scope defaults to BaseURL + "/.default".
	Scope string
	// HTTPClient defaults to a client tuned for many concurrent calls to one
	// host (see NewHTTPClient).
	HTTPClient *http.Client
	// MaxAttempts bounds the rounds of Graph calls made for one Apply
	// before the unsettled sites are returned Unresolved. A round is one
	// call for the open sites, or, once a whole-call 400 has split them in
	// parts (see Apply), one call per part. Default 5.
	MaxAttempts int
	// InitialInterval and MaxInterval shape the exponential backoff between
	// attempts. Defaults 500ms and 30s.
	InitialInterval time.Duration
	MaxInterval     time.Duration
	// MaxRetryAfter caps a single throttle wait: when Graph asks for a
	// longer pause, Apply returns Unresolved (with SiteError.RetryAfter) so
	// the caller can redeliver later instead of blocking, and the app-wide
	// gate closes for MaxRetryAfter only. Default 5m.
	MaxRetryAfter time.Duration
	// RequestTimeout bounds each HTTP request. Default 30s.
	RequestTimeout time.Duration
	// MaxResponseBytes bounds one answer's body. An answer longer than this
	// is not read beyond it: the call counts as an invalid response
	// (transient, never applied). Size it with ResponseBytesFor the largest
	// batch. Default ResponseBytesFor(DefaultBatchSites).
	MaxResponseBytes int
	// MaxResponseMemory bounds the answer bytes held by all concurrent calls
	// together: a call whose answer does not fit waits for others to finish
	// with theirs. At least MaxResponseBytes. Default
	// DefaultConcurrentAnswers × MaxResponseBytes.
	MaxResponseMemory int64
	Logger            zerolog.Logger
	// Metrics may be nil.
	Metrics *Metrics
	// MaxConcurrency bounds the Graph calls in flight; the bound adapts
	// below it while Graph throttles. Default DefaultMaxConcurrency.
	MaxConcurrency int
	// Pacing is what is known of the app's budget up front; the zero value
	// probes for it.
	Pacing Pacing
	// Throttled, when set, is told of each throttle episode: the pause
	// Graph asked for and the app-wide rate the pacer cut to, for the
	// other replicas (see internal/budget). It must not block.
	Throttled func(pause time.Duration, rate float64)
	// Now defaults to time.Now. It must advance at the rate of real time:
	// the throttle gate compares it with real timers.
	Now func() time.Time
	// API selects the Graph calls: APIV1 (the default) or
	// APIBetaFollowingSites.
	API API
	// SiteURLCacheTTL is how long ResolveSite remembers a URL's site id
	// (a 404 for NotFoundTTL of it at most); SiteURLCacheSize how many
	// URLs it remembers. Defaults DefaultSiteURLCacheTTL and
	// DefaultSiteURLCacheSize.
	SiteURLCacheTTL  time.Duration
	SiteURLCacheSize int
	// JSONBatch combines the add and remove calls that concurrent Apply
	// calls (other users') are about to send into Graph JSON batches: one
	// POST {BaseURL}/v1.0/$batch of at most MaxBatchRequests calls, each
	// answered, retried and counted against the pace and the throttle on
	// its own, exactly as if sent directly (see jsonbatch.go). A call with
	// nothing to combine with goes out directly. It applies to APIV1 only:
	// beta followingSites PATCHes always go out directly.
	JSONBatch bool
	// JSONBatchLinger is how long the first call of a batch waits for
	// others to join it, unless MaxBatchRequests join sooner: the latency
	// each call may pay for fewer HTTP requests. No call waits while the
	// pacer lets out fewer than one call per linger (nobody would join).
	// Default DefaultJSONBatchLinger.
	JSONBatchLinger time.Duration
}

// Defaults applied by New.
const (
	DefaultUserAgent       = "NONISV|sitefollow|sitefollow"
	DefaultMaxAttempts     = 5
	DefaultInitialInterval = 500 * time.Millisecond
	DefaultMaxInterval     = 30 * time.Second
	DefaultMaxRetryAfter   = 5 * time.Minute
	DefaultRequestTimeout  = 30 * time.Second
	DefaultMaxConcurrency  = 64
	// DefaultJSONBatchLinger is the default Config.JSONBatchLinger.
	DefaultJSONBatchLinger = 20 * time.Millisecond
	// DefaultMaxConnsPerHost sizes the default client's idle pool.
	DefaultMaxConnsPerHost = 128
)

// Answer bounds. An add answer lists every followed site in full (id, name,
// URLs, timestamps: about 1 KiB in practice), so 16 KiB a site leaves ample
// room, and a few KiB more cover the envelope and a whole-call error.
const (
	responseBytesPerSite = 16 << 10
	responseBytesSlack   = 8 << 10
	// DefaultBatchSites sizes the default MaxResponseBytes.
	DefaultBatchSites = 20
	// DefaultConcurrentAnswers sizes the default MaxResponseMemory.
	DefaultConcurrentAnswers = 64
)

// ResponseBytesFor is the longest answer a call for sites sites can need:
// the MaxResponseBytes for batches of at most that many sites.
func ResponseBytesFor(sites int) int {
	return max(sites, 1)*responseBytesPerSite + responseBytesSlack
}

// Client calls Graph's followedSites actions. It is safe for concurrent use;
// all calls share one token cache and one admission point (throttle gate and
// pacer).
type Client struct {
	baseURL        string
	userAgent      string
	httpClient     *http.Client
	tokens         *tokenCache
	admission      *admission
	maxAttempts    int
	initial        time.Duration
	maxInterval    time.Duration
	maxRetryAfter  time.Duration
	requestTimeout time.Duration
	log            zerolog.Logger
	metrics        *Metrics
	now            func() time.Time
	maxAnswer      int
	api            API
	// answers holds one unit per answer byte held, so concurrent calls
	// together never hold more than MaxResponseMemory however long the
	// answers Graph, or whoever answers, sends.
	answers *semaphore.Weighted
	// sites caches ResolveSite's answers.
	sites *siteCache
	// resolving lets concurrent misses of one site URL share a GET.
	resolving singleflight.Group
	// answerMemory is the size of answers, which bounds a $batch answer.
	answerMemory int64
	// batcher combines calls into $batch envelopes; nil without JSONBatch.
	batcher *batcher
	bufs    sync.Pool // *[]byte for reading answers, each of capacity at most maxAnswer+1
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	base, err := validateBaseURL(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	if cfg.Credential == nil {
		return nil, errNoCredential
	}
	api, err := cfg.API.orDefault()
	if err != nil {
		return nil, err
	}
	if cfg.MaxAttempts < 0 || cfg.InitialInterval < 0 || cfg.MaxInterval < 0 || cfg.MaxRetryAfter < 0 || cfg.RequestTimeout < 0 ||
		cfg.MaxResponseBytes < 0 || cfg.MaxResponseMemory < 0 || cfg.SiteURLCacheTTL < 0 || cfg.SiteURLCacheSize < 0 ||
		cfg.JSONBatchLinger < 0 {
		return nil, errors.New("graphclient: new: attempts, intervals, timeouts, answer and cache bounds and the batch linger must not be negative")
	}
	c := &Client{
		baseURL:        base,
		userAgent:      orDefault(cfg.UserAgent, DefaultUserAgent),
		httpClient:     cfg.HTTPClient,
		maxAttempts:    cfg.MaxAttempts,
		initial:        cfg.InitialInterval,
		maxInterval:    cfg.MaxInterval,
		maxRetryAfter:  cfg.MaxRetryAfter,
		requestTimeout: cfg.RequestTimeout,
		log:            cfg.Logger,
		metrics:        cfg.Metrics,
		now:            cfg.Now,
		maxAnswer:      cfg.MaxResponseBytes,
		api:            api,
	}
	if c.maxAnswer == 0 {
		c.maxAnswer = ResponseBytesFor(DefaultBatchSites)
	}
	total := cfg.MaxResponseMemory
	if total == 0 {
		total = DefaultConcurrentAnswers * int64(c.maxAnswer)
	}
	// A smaller total would let no answer be read at all.
	c.answerMemory = max(total, int64(c.maxAnswer)+1)
	c.answers = semaphore.NewWeighted(c.answerMemory)
	if c.now == nil {
		c.now = time.Now
	}
	if c.maxAttempts == 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.sites, err = newSiteCache(cfg.SiteURLCacheSize, cfg.SiteURLCacheTTL, c.now); err != nil {
		return nil, err
	}
	if c.initial == 0 {
		c.initial = DefaultInitialInterval
	}
	if c.maxInterval == 0 {
		c.maxInterval = DefaultMaxInterval
	}
	if c.maxInterval < c.initial {
		c.maxInterval = c.initial
	}
	if c.maxRetryAfter == 0 {
		c.maxRetryAfter = DefaultMaxRetryAfter
	}
	if c.requestTimeout == 0 {
		c.requestTimeout = DefaultRequestTimeout
	}
	if c.httpClient == nil {
		c.httpClient = NewHTTPClient()
	}
	scope := orDefault(cfg.Scope, base+"/.default")
	c.tokens = newTokenCache(cfg.Credential, scope, c.now, cfg.Metrics.tokenFailed)
	if cfg.MaxConcurrency == 0 {
		cfg.MaxConcurrency = DefaultMaxConcurrency
	}
	c.admission = newAdmission(admissionConfig{
		now:            c.now,
		maxRetryAfter:  c.maxRetryAfter,
		maxConcurrency: cfg.MaxConcurrency,
		pacing:         cfg.Pacing,
		metrics:        c.metrics,
		throttled:      cfg.Throttled,
	})
	if cfg.JSONBatch && api == APIV1 {
		linger := cfg.JSONBatchLinger
		if linger == 0 {
			linger = DefaultJSONBatchLinger
		}
		c.batcher = newBatcher(c, linger)
	}
	return c, nil
}

// NewHTTPClient returns the client New uses by default: keep-alive with a
// large per-host idle pool (all traffic goes to one Graph host), HTTP/2
// attempted, and bounded dial and TLS waits (the whole request is bounded
// by Config.RequestTimeout through its context). Redirects are not
// followed: Graph's followedSites actions never redirect, and a bearer token
// must not travel to wherever a redirect points.
func NewHTTPClient() *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          2 * DefaultMaxConnsPerHost,
		MaxIdleConnsPerHost:   DefaultMaxConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{Transport: transport, CheckRedirect: RefuseRedirect}
}

// RefuseRedirect is the http.Client CheckRedirect of every client that
// carries Graph calls or token requests: it never follows a redirect, so a
// bearer token or a client secret goes only to the host it was meant for,
// and a redirect target's answer is never taken for Graph's. The caller
// gets the 3xx itself: Apply treats it as a failed call (never applied) and
// the credential as a failed token request.
func RefuseRedirect(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// validateBaseURL refuses plain http except on loopback, so a bearer token
// never crosses a network in clear text.
func validateBaseURL(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("graphclient: new: base URL is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("graphclient: new: base URL %q: %w", redactURL(raw), urlParseCause(err))
	}
	shown := redactURL(raw)
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("graphclient: new: base URL %q must be scheme://host[:port][/path] without credentials, query or fragment", shown)
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return "", fmt.Errorf("graphclient: new: base URL %q uses plain http on a non-loopback host; use https", shown)
		}
	default:
		return "", fmt.Errorf("graphclient: new: base URL %q must use https", shown)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// redactURL is raw as error messages may show it: without its user part,
// which holds a password or, on its own, a token. A URL that does not parse
// is not shown at all if it may hold one.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil && strings.Contains(raw, "@"):
		return "[unparsable URL]"
	case err == nil && u.User != nil:
		u.User = url.User("redacted")
		return u.String()
	}
	return raw
}

// urlParseCause is url.Parse's error without the URL it quotes, which may
// hold credentials.
func urlParseCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckToken obtains (or reuses) a token, for readiness and start-up checks.
func (c *Client) CheckToken(ctx context.Context) error {
	if _, err := c.tokens.get(ctx); err != nil {
		return fmt.Errorf("graphclient: check token: %w", err)
	}
	return nil
}

// ThrottledUntil reports the time before which the Client sends no Graph
// call because Graph asked the app to pause; it is in the past when calls
// flow freely. Callers may use it to stop pulling work meanwhile.
func (c *Client) ThrottledUntil() time.Time {
	return c.admission.throttledUntil()
}

// PaceLimit reports the calls per second the Client currently allows
// itself; +Inf while it sees no reason for a limit.
func (c *Client) PaceLimit() float64 { return c.admission.paceLimit() }

// Admitted reports the calls per second Graph admitted lately (the shared
// budget's heartbeat).
func (c *Client) Admitted() float64 { return c.admission.pacer.admitted(c.now()) }

// Waiting reports whether calls are waiting for their turn.
func (c *Client) Waiting() bool { return c.admission.waiting.Load() > 0 }

// SetShare sets this replica's part of the app's budget and what the other
// busy replicas admit together (the shared budget).
func (c *Client) SetShare(share, peers float64) {
	c.admission.pacer.setShare(c.now(), share, peers)
}

// Adopt applies another replica's throttle: a pause for every call, and the
// app-wide rate it cut to (0 for none).
func (c *Client) Adopt(pause time.Duration, rate float64) { c.admission.adopt(pause, rate) }

// Apply sends siteIDs for one user and operation in one Graph call (the
// caller sizes batches), retries what is transient, and returns one
// SiteResult per input site, in input order. A call of several sites that
// Graph refuses whole with 400 (one malformed id fails them all, unnamed) is
// split in halves, sent on their own, and so on until each 400 comes back
// for one site alone, which is Rejected with it; the others proceed. Those
// calls spend none of MaxAttempts and are at most 2·k·⌈log₂ n⌉ more for k
// such sites among n, 2n−1 in all when every call is refused. Ids are matched
// case-insensitively; duplicates are sent once and share a verdict. Apply
// never returns Applied for a site Graph did not confirm.
func (c *Client) Apply(ctx context.Context, userID string, op Operation, siteIDs []string, opts ...ApplyOption) []SiteResult {
	r := newRun(c, userID, op, siteIDs)
	for _, o := range opts {
		o(r)
	}
	if len(siteIDs) == 0 {
		return r.results
	}
	if op != Add && op != Remove {
		r.settleAll(Rejected, &SiteError{Code: CodeInvalidOperation, Message: fmt.Sprintf("unknown operation %q", op)})
		return r.results
	}
	if userID == "" || userID == "." || userID == ".." {
		// url.PathEscape leaves dots alone; a "." or ".." segment could be
		// resolved by a proxy into another Graph path. No user has such an id.
		r.settleAll(Rejected, &SiteError{Code: CodeInvalidUserID, Message: fmt.Sprintf("invalid user id %q", userID)})
		return r.results
	}
	if c.api == APIBetaFollowingSites {
		r.op = FollowingSites
	}
	r.retry(ctx)
	return r.results
}

// retry makes the run's attempts under the backoff policy and settles what
// is still open.
func (r *run) retry(ctx context.Context) {
	c := r.c
	err := backoff.RetryNotify(func() error { return r.attempt(ctx) }, c.retryPolicy(ctx), func(err error, _ time.Duration) {
		var re *retryError
		if errors.As(err, &re) {
			c.metrics.retry(r.op, re.reason)
		}
	})
	r.finish(ctx, err)
}

// retryPolicy is the backoff between the attempts of one Apply or one site
// resolution: MaxAttempts in all, exponential from InitialInterval to
// MaxInterval, ending with ctx.
func (c *Client) retryPolicy(ctx context.Context) backoff.BackOffContext {
	exp := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(c.initial),
		backoff.WithMaxInterval(c.maxInterval),
		backoff.WithMaxElapsedTime(0),
	)
	return backoff.WithContext(backoff.WithMaxRetries(exp, uint64(c.maxAttempts-1)), ctx)
}

// ApplyOption adjusts one Apply call.
type ApplyOption func(*run)

// WithPermit makes Apply ask permit right before each HTTP request, after
// every wait: the caller's lease on the user must still cover the request.
// When permit fails, no request is sent and the open sites are Unresolved
// with CodeNotPermitted.
func WithPermit(permit func(ctx context.Context, callTimeout time.Duration) error) ApplyOption {
	return func(r *run) { r.permit = permit }
}
