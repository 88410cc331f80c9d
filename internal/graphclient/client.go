// Package graphclient follows and unfollows SharePoint sites on behalf of
// users through Microsoft Graph (POST /v1.0/users/{id}/followedSites/add and
// .../remove) and obtains the app-only Entra tokens those calls need.
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
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/google/uuid"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"

	"github.com/sitefollow/sitefollow/internal/event"
)

// Operation is the followedSites action a call performs.
type Operation string

// The two followedSites actions.
const (
	Add    Operation = "add"
	Remove Operation = "remove"
)

// Outcome is the verdict Apply reaches for one site.
type Outcome int

// Outcomes of Apply.
const (
	// Applied means Graph confirmed the site: a success entry in an add
	// answer, or a remove answered 204 or a 207 that does not list the site.
	Applied Outcome = iota + 1
	// Rejected means Graph refused the site permanently: the caller should
	// dead-letter it rather than retry.
	Rejected
	// Unresolved means the site's fate is still open after the in-process
	// retries (or the context ended): the caller should redeliver it later.
	Unresolved
)

// String returns the outcome's lower-case name, for logs.
func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Rejected:
		return "rejected"
	case Unresolved:
		return "unresolved"
	default:
		return "outcome(" + strconv.Itoa(int(o)) + ")"
	}
}

// Codes set on SiteError for verdicts Graph did not name with its own
// error.code. When a Graph response carries an error.code, that code is used
// instead.
const (
	// CodeThrottled means 429 or 509, or the app-wide throttle gate asked for a
	// wait longer than Config.MaxRetryAfter.
	CodeThrottled = "throttled"
	// CodeServiceUnavailable means 503, or another 5xx without a Graph code.
	CodeServiceUnavailable = "serviceUnavailable"
	// CodeGatewayTimeout means 504 without a Graph code.
	CodeGatewayTimeout = "gatewayTimeout"
	// CodeNetworkError means the request failed before an HTTP status arrived.
	CodeNetworkError = "networkError"
	// CodeTimeout means the request exceeded Config.RequestTimeout.
	CodeTimeout = "timeout"
	// CodeCanceled means Apply's context ended before the site was settled.
	CodeCanceled = "canceled"
	// CodeUnauthenticated means Graph answered 401 even with a freshly issued token.
	CodeUnauthenticated = "unauthenticated"
	// CodeTokenUnavailable means the credential could not produce a token.
	CodeTokenUnavailable = "tokenUnavailable"
	// CodeUnconfirmed means an add answer never mentioned the site, even after
	// re-sending it; it is not assumed followed.
	CodeUnconfirmed = "unconfirmed"
	// CodeInvalidResponse means a 2xx answer whose body could not be decoded.
	CodeInvalidResponse = "invalidResponse"
	// CodeInvalidOperation means Apply was called with an Operation other than
	// Add or Remove.
	CodeInvalidOperation = "invalidOperation"
	// CodeInvalidUserID means the user id is empty, "." or "..", which cannot
	// name a user and must not become a path segment.
	CodeInvalidUserID = "invalidUserId"
	// CodeNotPermitted means the caller's permit refused a call (see
	// WithPermit): nothing was sent, and the caller decides what follows.
	CodeNotPermitted = "notPermitted"
)

// SiteError describes why a site is Rejected or Unresolved.
type SiteError struct {
	// Code is Graph's error.code, or one of the Code* constants, or
	// "httpStatus<N>" for a permanent whole-call status without a code.
	Code    string
	Message string
	// HTTPStatus is the status of the response that carried the verdict:
	// 207 for per-site entries, the whole-call status otherwise, 0 when no
	// response arrived (network error, cancellation, throttle gate).
	HTTPStatus      int
	RequestID       string
	ClientRequestID string
	// RetryAfter is how long Graph asked the app to pause, when the verdict
	// came from throttling; a caller can use it as its redelivery delay,
	// capped by its own longest delay. It is at most 24 hours whatever
	// Graph sent.
	RetryAfter time.Duration
}

// Error returns the code and message.
func (e *SiteError) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// SiteResult is Apply's verdict for one requested site.
type SiteResult struct {
	// SiteID is the id as the caller passed it.
	SiteID  string
	Outcome Outcome
	// Err is nil when Outcome is Applied.
	Err *SiteError
	// Attempts is how many Graph calls included this site.
	Attempts int
}

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
	// MaxAttempts bounds the Graph calls made for one Apply before the
	// unsettled sites are returned Unresolved. Default 5.
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
	// Now defaults to time.Now. It must advance at the rate of real time:
	// the throttle gate compares it with real timers.
	Now func() time.Time
}

// Defaults applied by New.
const (
	DefaultUserAgent       = "NONISV|sitefollow|sitefollow"
	DefaultMaxAttempts     = 5
	DefaultInitialInterval = 500 * time.Millisecond
	DefaultMaxInterval     = 30 * time.Second
	DefaultMaxRetryAfter   = 5 * time.Minute
	DefaultRequestTimeout  = 30 * time.Second
	// DefaultMaxConnsPerHost sizes the default client's idle pool.
	DefaultMaxConnsPerHost = 128
)

// gateMargin is added to every Retry-After so that rounding between our
// clock and Graph's never lets a call through a moment too early.
const gateMargin = 25 * time.Millisecond

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
// all calls share one token cache and one throttle gate.
type Client struct {
	baseURL        string
	userAgent      string
	httpClient     *http.Client
	tokens         *tokenCache
	gate           *gate
	pacer          *pacer
	maxAttempts    int
	initial        time.Duration
	maxInterval    time.Duration
	maxRetryAfter  time.Duration
	requestTimeout time.Duration
	log            zerolog.Logger
	metrics        *Metrics
	now            func() time.Time
	maxAnswer      int
	// answers holds one unit per answer byte held, so concurrent calls
	// together never hold more than MaxResponseMemory however long the
	// answers Graph, or whoever answers, sends.
	answers *semaphore.Weighted
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
	if cfg.MaxAttempts < 0 || cfg.InitialInterval < 0 || cfg.MaxInterval < 0 || cfg.MaxRetryAfter < 0 || cfg.RequestTimeout < 0 ||
		cfg.MaxResponseBytes < 0 || cfg.MaxResponseMemory < 0 {
		return nil, errors.New("graphclient: new: attempts, intervals, timeouts and answer bounds must not be negative")
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
	}
	if c.maxAnswer == 0 {
		c.maxAnswer = ResponseBytesFor(DefaultBatchSites)
	}
	total := cfg.MaxResponseMemory
	if total == 0 {
		total = DefaultConcurrentAnswers * int64(c.maxAnswer)
	}
	// A smaller total would let no answer be read at all.
	c.answers = semaphore.NewWeighted(max(total, int64(c.maxAnswer)+1))
	if c.now == nil {
		c.now = time.Now
	}
	if c.maxAttempts == 0 {
		c.maxAttempts = DefaultMaxAttempts
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
	c.tokens = newTokenCache(cfg.Credential, scope, c.now)
	c.gate = newGate(c.now)
	c.pacer = newPacer()
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
	return c.gate.until()
}

// Apply sends siteIDs for one user and operation in one Graph call (the
// caller sizes batches; Apply does not chunk), retries what is transient, and
// returns one SiteResult per input site, in input order. Ids are matched
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
	exp := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(c.initial),
		backoff.WithMaxInterval(c.maxInterval),
		backoff.WithMaxElapsedTime(0),
	)
	policy := backoff.WithContext(backoff.WithMaxRetries(exp, uint64(c.maxAttempts-1)), ctx)
	err := backoff.RetryNotify(func() error { return r.attempt(ctx) }, policy, func(err error, _ time.Duration) {
		var re *retryError
		if errors.As(err, &re) {
			c.metrics.retry(op, re.reason)
		}
	})
	r.finish(ctx, err)
	return r.results
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

// retryError asks backoff to try again; reason labels the retries metric.
type retryError struct {
	reason string
}

func (e *retryError) Error() string { return "graphclient: retry: " + e.reason }

// Retry reasons, the values of the retries metric's reason label.
const (
	reasonThrottled     = "throttled"
	reasonUnavailable   = "unavailable"
	reasonNetwork       = "network"
	reasonSiteTransient = "site_transient"
	reasonUnconfirmed   = "unconfirmed"
	reasonUnauthorized  = "unauthenticated"
	reasonInvalid       = "invalid_response"
)

// errStop ends the retry loop after the run has recorded why.
var errStop = errors.New("graphclient: stop retrying")

// site is one distinct (case-insensitive) id of an Apply call.
type site struct {
	id      string // as first given
	indexes []int  // positions in the caller's slice
	lastErr *SiteError
	settled bool
	verdict verdict // what the answer being handled says about the site
}

// verdict collects the entries of one answer that name a site.
type verdict struct {
	requested bool // the site was in the call being answered
	success   bool
	permanent *SiteError
	transient *SiteError
}

// run is the state of one Apply call.
type run struct {
	c       *Client
	userID  string
	op      Operation
	results []SiteResult
	sites   map[string]*site // by lower-case id
	order   []string         // lower-case ids in first-seen order
	permit  func(ctx context.Context, callTimeout time.Duration) error
}

func newRun(c *Client, userID string, op Operation, siteIDs []string) *run {
	r := &run{
		c: c, userID: userID, op: op,
		results: make([]SiteResult, len(siteIDs)),
		sites:   make(map[string]*site, len(siteIDs)),
		order:   make([]string, 0, len(siteIDs)),
	}
	// One allocation for all sites and one for their indexes: a repeated
	// id is rare and only then does its indexes slice grow on its own.
	store := make([]site, 0, len(siteIDs))
	indexes := make([]int, len(siteIDs))
	for i, id := range siteIDs {
		r.results[i].SiteID = id
		key := strings.ToLower(id)
		if s, ok := r.sites[key]; ok {
			s.indexes = append(s.indexes, i)
			continue
		}
		indexes[i] = i
		store = append(store, site{id: id, indexes: indexes[i : i+1 : i+1]})
		r.sites[key] = &store[len(store)-1]
		r.order = append(r.order, key)
	}
	return r
}

func (r *run) pending() []string {
	keys := make([]string, 0, len(r.order))
	for _, k := range r.order {
		if !r.sites[k].settled {
			keys = append(keys, k)
		}
	}
	return keys
}

func (r *run) settle(key string, o Outcome, e *SiteError) {
	s := r.sites[key]
	s.settled = true
	for _, i := range s.indexes {
		r.results[i].Outcome = o
		r.results[i].Err = nil
		if e != nil {
			// Each result owns its error: callers may annotate it.
			own := *e
			r.results[i].Err = &own
		}
	}
}

func (r *run) settleAll(o Outcome, e *SiteError) {
	for _, k := range r.pending() {
		r.settle(k, o, e)
	}
}

// setPendingErr records why every unsettled site is still open.
func (r *run) setPendingErr(keys []string, e *SiteError) {
	for _, k := range keys {
		r.sites[k].lastErr = e
	}
}

// finish turns every site still open into Unresolved.
func (r *run) finish(ctx context.Context, err error) {
	var canceled *SiteError
	if ctx.Err() != nil {
		canceled = &SiteError{Code: CodeCanceled, Message: context.Cause(ctx).Error()}
	}
	for _, k := range r.order {
		if r.sites[k].settled {
			continue
		}
		e := r.sites[k].lastErr
		switch {
		case canceled != nil:
			e = canceled
		case e == nil:
			// Unreachable in practice: every retry path records an error.
			msg := "no verdict"
			if err != nil {
				msg = err.Error()
			}
			e = &SiteError{Code: CodeNetworkError, Message: msg}
		}
		r.settle(k, Unresolved, e)
	}
}

// attempt makes one Graph call (two when the first is answered 401) for the
// sites still open, and settles what the answer decides.
func (r *run) attempt(ctx context.Context) error {
	keys := r.pending()
	if len(keys) == 0 {
		return nil
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = r.sites[k].id
	}
	body, err := requestBody(ids)
	if err != nil {
		return backoff.Permanent(fmt.Errorf("graphclient: encode request: %w", err))
	}

	if err := r.waitTurn(ctx, keys); err != nil {
		return err
	}
	token, err := r.c.tokens.get(ctx)
	if err != nil {
		return r.tokenFailure(ctx, keys, err)
	}
	// The token fetch may have taken a while; another call may have been
	// throttled meanwhile.
	if err := r.waitGate(ctx, keys); err != nil {
		return err
	}
	if err := r.askPermit(ctx, keys); err != nil {
		return err
	}
	resp, err := r.send(ctx, keys, token, body)
	defer func() { resp.release(r.c) }()
	r.c.pace(resp)
	if err == nil && resp.status == http.StatusUnauthorized {
		r.logCall(resp, nil)
		resp.release(r.c)
		// Graph rejected the token (revoked, rotated secret, CAE event): get
		// a new one, bypassing every cache, and try exactly once more.
		r.c.metrics.retry(r.op, reasonUnauthorized)
		token, err = r.c.tokens.refresh(ctx, token, resp.claimsChallenge())
		if err != nil {
			return r.tokenFailure(ctx, keys, err)
		}
		if err := r.waitGate(ctx, keys); err != nil {
			return err
		}
		if err := r.askPermit(ctx, keys); err != nil {
			return err
		}
		resp, err = r.send(ctx, keys, token, body)
		r.c.pace(resp)
		if err == nil && resp.status == http.StatusUnauthorized {
			r.logCall(resp, nil)
			e := resp.wholeCallError(CodeUnauthenticated)
			e.Code = CodeUnauthenticated
			r.setPendingErr(keys, e)
			return backoff.Permanent(errStop)
		}
	}
	if err != nil {
		r.logCall(nil, err)
		return r.transportFailure(ctx, keys, err)
	}
	result := r.handle(keys, resp)
	r.logCall(resp, nil)
	return result
}

// requestBody is {"value":[{"id":...},...]}, byte for byte what
// json.Marshal writes for it (TestRequestBodyMatchesMarshal holds it to
// that), built without reflection: ids needing no escapes are copied as they
// are, the rare others are quoted by encoding/json.
func requestBody(ids []string) ([]byte, error) {
	n := len(`{"value":[]}`)
	for _, id := range ids {
		n += len(`{"id":""},`) + len(id)
	}
	b := make([]byte, 0, n)
	b = append(b, `{"value":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		if plainJSON(id) {
			b = append(b, '"')
			b = append(b, id...)
			b = append(b, '"')
		} else {
			q, err := json.Marshal(id)
			if err != nil {
				return nil, err
			}
			b = append(b, q...)
		}
		b = append(b, '}')
	}
	return append(b, `]}`...), nil
}

// plainJSON reports whether json.Marshal writes s verbatim between quotes:
// printable ASCII other than the quote, the backslash and the characters it
// escapes for HTML.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// pace is the one place an answer's app-wide meaning is taken: a transient
// answer's Retry-After closes the gate, and the pacer learns that 429 and
// 509 (and a 503 with Retry-After; SharePoint throttles with both) mean the
// app is over its budget, while any other answer means the call was
// admitted. No answer says nothing.
func (c *Client) pace(resp *response) {
	if resp == nil {
		return
	}
	now := c.now()
	if !transientStatus(resp.status) {
		c.pacer.admit(now)
		return
	}
	wait, hasWait := resp.retryAfter(now)
	if hasWait {
		// The pause applies to the whole app: close the gate at once, before
		// anything else is done with the answer, so no other call slips out
		// meanwhile. It closes for MaxRetryAfter at most: a longer pause is
		// left to the caller's redelivery of this call's sites (see
		// handleTransient), and must not hold every other user's calls
		// back for as long as Graph, or whoever answers, asks.
		c.gate.push(min(wait+gateMargin, c.maxRetryAfter))
	}
	switch {
	case resp.status == http.StatusTooManyRequests, resp.status == 509,
		resp.status == http.StatusServiceUnavailable && hasWait:
		c.pacer.throttle(now, min(wait, c.maxRetryAfter))
	default:
		c.pacer.admit(now)
	}
}

// transientStatus reports whether a whole-call status is worth retrying:
// throttling (429, 509), timeouts (408) and server errors.
func transientStatus(s int) bool {
	return s == http.StatusTooManyRequests || s == 509 || s == http.StatusRequestTimeout || s >= 500
}

// PaceLimit reports the calls per second the Client currently allows itself
// after Graph throttled it; +Inf until Graph throttles.
func (c *Client) PaceLimit() float64 { return c.pacer.limit() }

// waitTurn waits for the throttle gate, then for the pacer. If the gate
// closed again while the call waited on the pacer, it queues afresh: calls
// released together when a Retry-After ends would otherwise go out as one
// burst and be throttled again.
func (r *run) waitTurn(ctx context.Context, keys []string) error {
	for {
		if err := r.waitGate(ctx, keys); err != nil {
			return err
		}
		if err := r.c.pacer.wait(ctx); err != nil {
			return backoff.Permanent(err)
		}
		if !r.c.gate.until().After(r.c.now()) {
			return nil
		}
	}
}

// waitGate blocks until the app-wide throttle gate opens, unless that is
// further away than MaxRetryAfter.
func (r *run) waitGate(ctx context.Context, keys []string) error {
	waited, err := r.c.gate.wait(ctx, r.c.maxRetryAfter)
	r.c.metrics.throttleWaited(waited)
	if err == nil {
		return nil
	}
	var tooLong *gateTooLongError
	switch {
	case errors.As(err, &tooLong):
		r.setPendingErr(keys, &SiteError{
			Code:       CodeThrottled,
			Message:    fmt.Sprintf("graph asked the app to pause for %s, more than the %s allowed in process", tooLong.wait.Round(time.Millisecond), r.c.maxRetryAfter),
			RetryAfter: tooLong.wait,
		})
		return backoff.Permanent(errStop)
	case err != nil:
		return backoff.Permanent(err)
	}
	return nil
}

// askPermit asks the caller's permit, if any, whether a request may go out
// now; a refusal ends the attempts.
func (r *run) askPermit(ctx context.Context, keys []string) error {
	if r.permit == nil {
		return nil
	}
	if err := r.permit(ctx, r.c.requestTimeout); err != nil {
		if ctx.Err() != nil {
			return backoff.Permanent(ctx.Err())
		}
		r.setPendingErr(keys, &SiteError{Code: CodeNotPermitted, Message: err.Error()})
		return backoff.Permanent(errStop)
	}
	return nil
}

func (r *run) tokenFailure(ctx context.Context, keys []string, err error) error {
	if ctx.Err() != nil {
		return backoff.Permanent(ctx.Err())
	}
	// The credential (azcore) already retried transient Entra failures;
	// another round here would only multiply token requests. The sites are
	// redelivered later, by which time operators may have fixed the secret.
	r.setPendingErr(keys, &SiteError{Code: CodeTokenUnavailable, Message: err.Error()})
	return backoff.Permanent(errStop)
}

func (r *run) transportFailure(ctx context.Context, keys []string, err error) error {
	if ctx.Err() != nil {
		return backoff.Permanent(ctx.Err())
	}
	code := CodeNetworkError
	var se *sendError
	if errors.As(err, &se) && se.timeout {
		code = CodeTimeout
	}
	e := &SiteError{Code: code, Message: err.Error()}
	if se != nil {
		e.ClientRequestID = se.clientRequestID
	}
	r.setPendingErr(keys, e)
	return &retryError{reason: reasonNetwork}
}

// handle settles the sites an HTTP answer decides.
func (r *run) handle(keys []string, resp *response) error {
	if resp.tooLong {
		// Whatever it says, an answer longer than any batch can need is not
		// Graph's answer to it: never taken as applied, tried again.
		r.setPendingErr(keys, resp.siteError(CodeInvalidResponse,
			fmt.Sprintf("graph's %d answer is longer than the %d bytes allowed", resp.status, r.c.maxAnswer)))
		return &retryError{reason: reasonInvalid}
	}
	switch s := resp.status; {
	case s == http.StatusNoContent && r.op == Remove:
		for _, k := range keys {
			r.settle(k, Applied, nil)
		}
		return nil
	case s >= 200 && s < 300:
		return r.handleEntries(keys, resp)
	case transientStatus(s):
		return r.handleTransient(keys, resp)
	case s >= 400:
		// Permanent: 400 malformed, 403 no permission or guest user, 404
		// unknown user, and the rest of 4xx. Retrying cannot help.
		e := resp.wholeCallError("httpStatus" + strconv.Itoa(s))
		for _, k := range keys {
			r.settle(k, Rejected, e)
		}
		return nil
	default:
		// 1xx/3xx: not an answer Graph gives to these actions; treat it as
		// a glitch on the way rather than a verdict.
		r.setPendingErr(keys, resp.wholeCallError("httpStatus"+strconv.Itoa(s)))
		return &retryError{reason: reasonUnavailable}
	}
}

func (r *run) handleTransient(keys []string, resp *response) error {
	fallback := CodeServiceUnavailable
	reason := reasonUnavailable
	switch resp.status {
	case http.StatusTooManyRequests, 509:
		fallback, reason = CodeThrottled, reasonThrottled
	case http.StatusGatewayTimeout:
		fallback = CodeGatewayTimeout
	case http.StatusRequestTimeout:
		fallback = CodeTimeout
	}
	e := resp.wholeCallError(fallback)
	if wait, ok := resp.retryAfter(r.c.now()); ok {
		// pace has already closed the app-wide gate for this wait.
		e.RetryAfter = wait
		if wait > r.c.maxRetryAfter {
			r.setPendingErr(keys, e)
			return backoff.Permanent(errStop)
		}
	}
	r.setPendingErr(keys, e)
	return &retryError{reason: reason}
}

// handleEntries applies a 2xx answer that lists entries (add 200, 207).
func (r *run) handleEntries(keys []string, resp *response) error {
	entries, err := resp.entries()
	if err != nil {
		e := resp.siteError(CodeInvalidResponse, err.Error())
		r.setPendingErr(keys, e)
		return &retryError{reason: reasonInvalid}
	}
	for _, k := range keys {
		r.sites[k].verdict = verdict{requested: true}
	}
	var unrequested []string
	for _, en := range entries {
		st := r.sites[strings.ToLower(en.ID)]
		if st == nil || !st.verdict.requested {
			unrequested = append(unrequested, strings.Clone(en.ID))
			continue
		}
		v := &st.verdict
		if en.Error == nil {
			v.success = true
			continue
		}
		e := resp.siteError(en.Error.Code, en.Error.Message)
		if en.Error.transient() {
			v.transient = e
		} else {
			v.permanent = e
		}
	}
	resp.unrequested = unrequested
	var reason string
	for _, k := range keys {
		st := r.sites[k]
		v := st.verdict
		st.verdict = verdict{}
		switch {
		case v.permanent != nil:
			r.settle(k, Rejected, v.permanent)
		case v.transient != nil:
			st.lastErr = v.transient
			reason = reasonSiteTransient
		case v.success:
			r.settle(k, Applied, nil)
		case r.op == Remove:
			// Remove answers list only the failures.
			r.settle(k, Applied, nil)
		default:
			// An add answer that does not mention a site proves nothing:
			// re-send it (with the other open sites) to get a verdict.
			st.lastErr = resp.siteError(CodeUnconfirmed, "graph's answer did not mention this site")
			if reason == "" {
				reason = reasonUnconfirmed
			}
		}
	}
	if reason != "" {
		return &retryError{reason: reason}
	}
	return nil
}

// call describes one HTTP call, for its log line.
type call struct {
	attempt         int
	sites           int
	clientRequestID string
	status          string
	elapsed         time.Duration
	err             error
}

// response is what is kept of one HTTP answer.
type response struct {
	call
	buf             *[]byte // pooled; backs raw and body; see view
	held            int64   // units of Client.answers held until release
	raw             []byte  // the answer's body, read in place
	tooLong         bool    // the body was longer than MaxResponseBytes and not read
	status          int
	header          http.Header
	body            string
	requestID       string
	clientRequestID string
	unrequested     []string
}

// sendError is a request that got no HTTP status.
type sendError struct {
	call
	timeout bool
}

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

// send performs one HTTP call and updates the metrics; the caller logs it
// with logCall once the answer is interpreted.
func (r *run) send(ctx context.Context, keys []string, token string, body []byte) (*response, error) {
	c := r.c
	for _, k := range keys {
		for _, i := range r.sites[k].indexes {
			r.results[i].Attempts++
		}
	}
	info := call{
		attempt:         r.results[r.sites[keys[0]].indexes[0]].Attempts,
		sites:           len(keys),
		clientRequestID: uuid.NewString(),
	}
	target := c.baseURL + "/v1.0/users/" + url.PathEscape(r.userID) + "/followedSites/" + string(r.op)

	rctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		info.status = "error"
		info.err = fmt.Errorf("graphclient: build request: %w", err)
		return nil, &sendError{call: info}
	}
	// The keys in canonical form, as Header.Set would write them, in one
	// map of the right size.
	req.Header = http.Header{
		"Authorization":            {"Bearer " + token},
		"Content-Type":             {"application/json"},
		"Accept":                   {"application/json"},
		"User-Agent":               {c.userAgent},
		"Client-Request-Id":        {info.clientRequestID},
		"Return-Client-Request-Id": {"true"},
	}

	c.metrics.callStarted(r.op, len(keys))
	start := time.Now()
	resp, err := c.httpClient.Do(req)
	var out *response
	if err == nil {
		out = &response{
			status:          resp.StatusCode,
			header:          resp.Header,
			requestID:       resp.Header.Get("Request-Id"),
			clientRequestID: orDefault(resp.Header.Get("Client-Request-Id"), info.clientRequestID),
		}
		if err = c.readBody(rctx, resp, out); err != nil {
			out.release(c)
			out = nil
			err = fmt.Errorf("read %d answer: %w", resp.StatusCode, err)
		}
	}
	info.elapsed = time.Since(start)
	switch {
	case out != nil:
		info.status = strconv.Itoa(out.status)
	case ctx.Err() != nil:
		info.status = "canceled"
	default:
		info.status = "error"
	}
	c.metrics.callDone(r.op, info.status, info.elapsed)

	if err != nil {
		info.err = fmt.Errorf("graphclient: %s for user %q: %w", r.op, r.userID, err)
		var ne net.Error
		timeout := ctx.Err() == nil && (errors.Is(rctx.Err(), context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout())
		return nil, &sendError{call: info, timeout: timeout}
	}
	out.call = info
	return out, nil
}

// readBody reads and closes an answer's body into a pooled buffer, which
// the caller hands back with response.release. The body is read in place,
// into a buffer sized from Content-Length when Graph sends one, so it is
// never copied whole; a body longer than MaxResponseBytes is not read at
// all beyond the bound (out.tooLong) and its connection is dropped. Before
// reading, the answer's share of MaxResponseMemory is taken, so concurrent
// calls never hold more than that together. Reading a body to its end lets
// the connection be reused.
func (c *Client) readBody(ctx context.Context, resp *http.Response, out *response) error {
	defer resp.Body.Close()
	limit := c.maxAnswer
	if resp.ContentLength > int64(limit) {
		out.tooLong = true
		return nil
	}
	// One byte more than the bound tells a body of exactly the bound from
	// a longer one.
	want := limit + 1
	if resp.ContentLength >= 0 {
		want = int(resp.ContentLength) + 1
	}
	bp, ok := c.bufs.Get().(*[]byte)
	if !ok {
		bp = new([]byte)
	}
	// A pooled buffer larger than this answer needs is held whole.
	held := int64(max(want, cap(*bp)))
	if err := c.answers.Acquire(ctx, held); err != nil {
		c.bufs.Put(bp)
		return fmt.Errorf("wait for answer memory: %w", err)
	}
	out.buf, out.held = bp, held
	b := (*bp)[:0]
	if cap(b) < want && resp.ContentLength >= 0 {
		b = make([]byte, 0, want)
	}
	for {
		if len(b) == cap(b) {
			if len(b) > limit {
				*bp = b
				out.tooLong = true
				return nil
			}
			// Doubling, capped at the bound: a body of unknown length
			// costs at most twice the bound in allocations, and usually
			// one or two.
			nb := make([]byte, len(b), min(max(2*cap(b), 4<<10), want))
			copy(nb, b)
			b = nb
		}
		n, err := resp.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			*bp = b
			return err
		}
	}
	*bp = b
	if len(b) > limit {
		out.tooLong = true
		return nil
	}
	out.raw = b
	out.body = view(b)
	return nil
}

// view is b as a string without copying it. An add answer is several KB
// per call and only a few ids and error texts of it outlive the call, so
// the answer is read in place: every string kept beyond release (error
// codes and messages, unrequested ids) is cloned first, and nothing writes
// to b while the view exists.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// release returns the answer's buffer to the pool; body is unusable after.
func (p *response) release(c *Client) {
	if p == nil {
		return
	}
	p.body, p.raw = "", nil
	if p.buf != nil {
		*p.buf = (*p.buf)[:0]
		c.bufs.Put(p.buf)
		p.buf = nil
	}
	if p.held > 0 {
		c.answers.Release(p.held)
		p.held = 0
	}
}

// logCall writes the one log line of an HTTP call. Tokens never reach it.
func (r *run) logCall(resp *response, err error) {
	var info call
	if resp != nil {
		info = resp.call
	} else {
		var se *sendError
		if !errors.As(err, &se) {
			return
		}
		info = se.call
	}
	ev := r.c.log.Info()
	if resp == nil || resp.status >= 300 || resp.tooLong || len(resp.unrequested) > 0 {
		ev = r.c.log.Warn()
	}
	ev = ev.Str("user", r.userID).Str("operation", string(r.op)).Int("sites", info.sites).
		Str("status", info.status).Dur("duration", info.elapsed).Int("attempt", info.attempt).
		Str("client_request_id", info.clientRequestID)
	if resp != nil {
		ev = ev.Str("request_id", resp.requestID)
		if resp.tooLong {
			ev = ev.Bool("answer_too_long", true)
		}
		if resp.status >= 400 {
			ev = ev.Str("error_code", resp.wholeCallError("").Code)
		}
		if n := len(resp.unrequested); n > 0 {
			// Graph answered for ids nobody asked about; they are ignored.
			// A few, each cut short, keep the line bounded however many.
			ids := make([]string, 0, min(n, maxLoggedIDs))
			for _, id := range resp.unrequested[:min(n, maxLoggedIDs)] {
				ids = append(ids, event.Truncate(id, maxLoggedIDBytes))
			}
			ev = ev.Strs("unrequested_ids", ids).Int("unrequested", n)
		}
	} else {
		ev = ev.AnErr("error", info.err)
	}
	ev.Msg("graph call")
}

// maxLoggedIDs and maxLoggedIDBytes bound the unrequested ids one log line
// lists: a 207 may list any number, of any length.
const (
	maxLoggedIDs     = 10
	maxLoggedIDBytes = 256
)

// graphError is Graph's error object, whole-call or per entry.
type graphError struct {
	Code       string      `json:"code"`
	Message    string      `json:"message"`
	InnerError *innerError `json:"innerError"`
}

type innerError struct {
	Code            string      `json:"code"`
	RequestID       string      `json:"request-id"`
	ClientRequestID string      `json:"client-request-id"`
	InnerError      *innerError `json:"innerError"`
}

// transientSiteCodes are per-entry codes worth re-sending the site for.
var transientSiteCodes = map[string]bool{
	"activitylimitreached": true,
	"servicenotavailable":  true,
	"serviceunavailable":   true,
	"generalexception":     true,
	"throttledrequest":     true,
	"toomanyrequests":      true,
}

// transient reports whether the entry's code, or any nested detailed code,
// names a passing condition.
func (g *graphError) transient() bool {
	if transientSiteCodes[strings.ToLower(g.Code)] {
		return true
	}
	for in := g.InnerError; in != nil; in = in.InnerError {
		if transientSiteCodes[strings.ToLower(in.Code)] {
			return true
		}
	}
	return false
}

type entry struct {
	ID    string      `json:"id"`
	Error *graphError `json:"error"`
}

func (p *response) entries() ([]entry, error) {
	if strings.TrimSpace(p.body) == "" {
		return nil, nil
	}
	if entries, ok := scanEntries(p.body); ok {
		return entries, nil
	}
	var v struct {
		Value []entry `json:"value"`
	}
	if err := json.Unmarshal(p.raw, &v); err != nil {
		return nil, fmt.Errorf("decode %d answer: %w", p.status, err)
	}
	return v.Value, nil
}

// siteError builds the SiteError for a per-entry verdict, which carries no
// request ids of its own: they come from the response headers.
func (p *response) siteError(code, msg string) *SiteError {
	return &SiteError{Code: strings.Clone(code), Message: strings.Clone(msg), HTTPStatus: p.status,
		RequestID: p.requestID, ClientRequestID: p.clientRequestID}
}

// wholeCallError builds the SiteError for a whole-call error body, using
// fallback when the body names no code.
func (p *response) wholeCallError(fallback string) *SiteError {
	e := p.siteError(fallback, http.StatusText(p.status))
	var v struct {
		Error *graphError `json:"error"`
	}
	// Unmarshal copies the strings it returns, so reading p.raw in place
	// keeps nothing of the buffer.
	if json.Unmarshal(p.raw, &v) != nil || v.Error == nil {
		return e
	}
	if v.Error.Code != "" {
		e.Code = v.Error.Code
	}
	if v.Error.Message != "" {
		e.Message = v.Error.Message
	}
	if in := v.Error.InnerError; in != nil {
		if e.RequestID == "" {
			e.RequestID = in.RequestID
		}
		if in.ClientRequestID != "" {
			e.ClientRequestID = in.ClientRequestID
		}
	}
	return e
}

// retryAfter is how long the answer asks the app to pause: the larger of
// Retry-After and RateLimit-Reset.
func (p *response) retryAfter(now time.Time) (time.Duration, bool) {
	ra, okRA := parseRetryAfter(p.header.Get("Retry-After"), now)
	rl, okRL := parseRetryAfter(p.header.Get("RateLimit-Reset"), now)
	switch {
	case okRA && okRL:
		return max(ra, rl), true
	case okRA:
		return ra, true
	case okRL:
		return rl, true
	}
	return 0, false
}

// claimsChallenge returns the decoded claims of a 401's Bearer challenge
// (Continuous Access Evaluation), or "".
func (p *response) claimsChallenge() string {
	return parseClaimsChallenge(p.header.Values("WWW-Authenticate"))
}
