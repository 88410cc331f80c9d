package graphclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"

	"github.com/sitefollow/sitefollow/internal/event"
)

// OpGetSite labels the site-resolving GET in metrics and logs.
const OpGetSite Operation = "getSite"

// CodeInvalidSiteURL means ResolveSite was given a URL event.ValidSiteURL
// refuses; nothing was sent.
const CodeInvalidSiteURL = "invalidSiteUrl"

// ErrSiteNotFound classifies a site URL Graph has no site for (404): every
// error ResolveSite returns for one matches it with errors.Is.
var ErrSiteNotFound = errors.New("graphclient: site not found")

// ResolveError says why ResolveSite could not resolve a URL. Transient
// failures (throttling past MaxRetryAfter, 5xx, network, token, attempts
// used up) are worth another try later; the others (404, other 4xx, an
// invalid URL) are not.
type ResolveError struct {
	URL       string
	Err       *SiteError
	Transient bool
}

// Error names the URL and the cause.
func (e *ResolveError) Error() string {
	return "graphclient: resolve site " + strconv.Quote(e.URL) + ": " + e.Err.Error()
}

// Is makes errors.Is(err, ErrSiteNotFound) hold for a 404.
func (e *ResolveError) Is(target error) bool {
	return target == ErrSiteNotFound && !e.Transient && e.Err.HTTPStatus == http.StatusNotFound
}

// ResolveSite returns the Graph site id ("host,siteGuid,webGuid") of the
// site at siteURL, a URL event.ValidSiteURL accepts, by
// GET /v1.0/sites/{hostname}:/{server-relative-path} (the root site:
// GET /v1.0/sites/{hostname}). Each path segment is unescaped and escaped
// again, so spaces, non-ASCII letters and escaped slashes reach Graph as
// one segment each.
//
// Answers are cached by event.SiteURLKey (hostname case-insensitive, no
// trailing slash): an id for Config.SiteURLCacheTTL, a 404 for
// NotFoundTTL of that at most, so a site created just after a request
// named it is found soon. A cached answer costs no GET.
//
// The GET goes through the same admission as every call (throttle gate,
// concurrency bound, pacer), carries the same User-Agent and token, is
// bounded by RequestTimeout and MaxResponseBytes, and is retried under the
// same backoff policy and MaxAttempts when the failure is transient. Every
// error is a *ResolveError.
func (c *Client) ResolveSite(ctx context.Context, siteURL string) (string, error) {
	if err := event.ValidSiteURL(siteURL); err != nil {
		c.metrics.resolved("error")
		return "", &ResolveError{URL: siteURL, Err: &SiteError{Code: CodeInvalidSiteURL, Message: err.Error()}}
	}
	key := event.SiteURLKey(siteURL)
	if e, ok := c.sites.get(key); ok {
		if e.id == "" {
			c.metrics.resolved("notFound")
			return "", &ResolveError{URL: siteURL, Err: e.notFound}
		}
		c.metrics.resolved("hit")
		return e.id, nil
	}
	// Concurrent misses of one URL (a burst of joiners naming the same
	// sites) share one GET. They all run in the resolver stage under one
	// context, so the first caller's context is theirs too.
	v, _, shared := c.resolving.Do(key, func() (any, error) {
		return c.fetchSite(ctx, siteURL, key), nil
	})
	a := v.(siteAnswer)
	if !shared {
		return a.id, a.err
	}
	c.metrics.resolved("shared")
	var re *ResolveError
	if errors.As(a.err, &re) && re.URL != siteURL {
		// Another spelling of the same URL: the caller's error names its own.
		own := *re
		own.URL = siteURL
		return "", &own
	}
	return a.id, a.err
}

// siteAnswer is what one GET for a site URL decided.
type siteAnswer struct {
	id  string
	err error
}

// fetchSite resolves siteURL (cache key key) with GETs under the retry
// policy, caches what Graph decided, and counts it.
func (c *Client) fetchSite(ctx context.Context, siteURL, key string) siteAnswer {
	g := &siteGet{c: c, url: siteURL, target: c.baseURL + sitePath(siteURL)}
	err := backoff.RetryNotify(func() error { return g.attempt(ctx) }, c.retryPolicy(ctx), func(err error, _ time.Duration) {
		var re *retryError
		if errors.As(err, &re) {
			c.metrics.retry(OpGetSite, re.reason)
		}
	})
	switch {
	case g.id != "":
		c.sites.put(key, cachedSite{id: g.id})
		c.metrics.resolved("miss")
		return siteAnswer{id: g.id}
	case g.failure != nil && !g.transient:
		if g.failure.HTTPStatus == http.StatusNotFound {
			c.sites.put(key, cachedSite{notFound: g.failure})
			c.metrics.resolved("notFound")
		} else {
			c.metrics.resolved("error")
		}
		return siteAnswer{err: &ResolveError{URL: siteURL, Err: g.failure}}
	}
	c.metrics.resolved("error")
	f := g.failure
	if ctx.Err() != nil {
		f = &SiteError{Code: CodeCanceled, Message: context.Cause(ctx).Error()}
	} else if f == nil {
		msg := "no answer"
		if err != nil {
			msg = err.Error()
		}
		f = &SiteError{Code: CodeNetworkError, Message: msg}
	}
	return siteAnswer{err: &ResolveError{URL: siteURL, Err: f, Transient: true}}
}

// sitePath is the Graph path of the site at a valid site URL.
func sitePath(siteURL string) string {
	host, segments := event.SplitSiteURL(siteURL)
	var b strings.Builder
	b.WriteString("/v1.0/sites/")
	b.WriteString(strings.ToLower(host))
	for i, seg := range segments {
		if i == 0 {
			b.WriteString(":")
		}
		b.WriteByte('/')
		// Validation allowed only well-formed escapes, so this cannot fail;
		// were it to, the raw segment is still one segment.
		if raw, err := url.PathUnescape(seg); err == nil {
			seg = raw
		}
		b.WriteString(url.PathEscape(seg))
	}
	b.WriteString("?$select=id")
	return b.String()
}

// siteGet is the state of one ResolveSite's attempts.
type siteGet struct {
	c      *Client
	url    string
	target string
	// id is set once Graph answered with the site; failure is the latest
	// reason it did not, transient telling whether another try may help.
	id        string
	failure   *SiteError
	transient bool
}

// attempt makes one admitted GET (two when the first is answered 401).
func (g *siteGet) attempt(ctx context.Context) error {
	c := g.c
	t, err := c.admission.enter(ctx, c.maxRetryAfter)
	defer t.done()
	if err != nil {
		return g.notAdmitted(err)
	}
	token, err := c.tokens.get(ctx)
	if err != nil {
		return g.tokenFailure(ctx, err)
	}
	if _, err := t.recheck(ctx); err != nil {
		return g.notAdmitted(err)
	}
	resp, err := g.send(ctx, token)
	defer func() { resp.release(c) }()
	t.observe(c.now(), resp)
	if err == nil && resp.status == http.StatusUnauthorized {
		g.log(resp, nil)
		resp.release(c)
		c.metrics.retry(OpGetSite, reasonUnauthorized)
		if token, err = c.tokens.refresh(ctx, token, resp.claimsChallenge()); err != nil {
			return g.tokenFailure(ctx, err)
		}
		if _, err := t.recheck(ctx); err != nil {
			return g.notAdmitted(err)
		}
		resp, err = g.send(ctx, token)
		t.observe(c.now(), resp)
	}
	g.log(resp, err)
	if err != nil {
		if ctx.Err() != nil {
			return backoff.Permanent(ctx.Err())
		}
		g.failure, g.transient = &SiteError{Code: CodeNetworkError, Message: err.Error()}, true
		return &retryError{reason: reasonNetwork}
	}
	return g.handle(resp)
}

// handle reads one answer.
func (g *siteGet) handle(resp *response) error {
	s := resp.status
	switch {
	case resp.tooLong:
		g.failure, g.transient = resp.siteError(CodeInvalidResponse,
			fmt.Sprintf("graph's %d answer is longer than the %d bytes allowed", s, g.c.maxAnswer)), true
		return &retryError{reason: reasonInvalid}
	case s == http.StatusOK:
		var site struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(resp.raw, &site); err != nil || event.ValidSiteID(site.ID) != nil {
			// Whatever answered, it did not name a site: never cached.
			g.failure, g.transient = resp.siteError(CodeInvalidResponse, "graph's 200 answer names no valid site id"), true
			return &retryError{reason: reasonInvalid}
		}
		g.id = site.ID
		return nil
	case s == http.StatusUnauthorized:
		g.failure, g.transient = resp.wholeCallError(CodeUnauthenticated), true
		g.failure.Code = CodeUnauthenticated
		return backoff.Permanent(errStop)
	case transientStatus(s):
		fallback, reason := transientCode(s)
		g.failure, g.transient = resp.wholeCallError(fallback), true
		if wait, ok := resp.retryAfter(g.c.now()); ok {
			g.failure.RetryAfter = wait
			if wait > g.c.maxRetryAfter {
				return backoff.Permanent(errStop)
			}
		}
		return &retryError{reason: reason}
	case s >= 400:
		// 404 itemNotFound: no site at that URL. Other 4xx (403 without
		// permission, 400) will not change on a retry either.
		g.failure, g.transient = resp.wholeCallError("httpStatus"+strconv.Itoa(s)), false
		return backoff.Permanent(errStop)
	default:
		// 1xx, 3xx (never followed) and other 2xx: no verdict.
		g.failure, g.transient = resp.wholeCallError("httpStatus"+strconv.Itoa(s)), true
		return &retryError{reason: reasonUnavailable}
	}
}

// send performs one GET; the answer is the caller's to release.
func (g *siteGet) send(ctx context.Context, token string) (*response, error) {
	c := g.c
	crid := uuid.NewString()
	c.metrics.callStarted(OpGetSite, 1)
	start := time.Now()
	out, _, err := c.roundTrip(ctx, http.MethodGet, g.target, token, crid, nil, c.maxAnswer)
	if err != nil {
		c.metrics.callDone(OpGetSite, "error", time.Since(start))
		return nil, fmt.Errorf("graphclient: %s %s: %w", OpGetSite, strconv.Quote(g.url), err)
	}
	out.call = call{attempt: 1, sites: 1, clientRequestID: crid}
	out.elapsed = time.Since(start)
	out.call.status = strconv.Itoa(out.status)
	c.metrics.callDone(OpGetSite, out.call.status, out.elapsed)
	return out, nil
}

// log writes the one line of a GET.
func (g *siteGet) log(resp *response, err error) {
	ev := g.c.log.Info()
	if resp == nil || resp.status >= 300 {
		ev = g.c.log.Warn()
	}
	ev = ev.Str("operation", string(OpGetSite)).Str("siteUrl", event.Truncate(g.url, 256))
	if resp != nil {
		ev = ev.Int("status", resp.status).Float64("durationMs", float64(resp.elapsed.Microseconds())/1000).
			Str("request_id", resp.requestID).Str("client_request_id", resp.clientRequestID)
	} else {
		ev = ev.AnErr("error", err)
	}
	ev.Msg("graph call")
}

func (g *siteGet) notAdmitted(err error) error {
	var tooLong *gateTooLongError
	if errors.As(err, &tooLong) {
		g.failure = &SiteError{Code: CodeThrottled, RetryAfter: tooLong.wait,
			Message: fmt.Sprintf("graph asked the app to pause for %s, more than the %s allowed in process", tooLong.wait.Round(time.Millisecond), g.c.maxRetryAfter)}
		g.transient = true
		return backoff.Permanent(errStop)
	}
	return backoff.Permanent(err)
}

func (g *siteGet) tokenFailure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return backoff.Permanent(ctx.Err())
	}
	g.failure, g.transient = &SiteError{Code: CodeTokenUnavailable, Message: err.Error()}, true
	return backoff.Permanent(errStop)
}
