package graphsim

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// faults holds pending injected failures. Counted faults apply to the next
// n matching Graph calls and then expire. Guarded by Server.mu.
//
// A call is judged in this order: route (404/400/405), bearer token (401),
// body (400: malformed, or naming one of Options.PoisonSites), ThrottleUser
// (429), Throttle (429), Unavailable (503/504), RateLimit (429), Budget (429
// or 503, see Budget), Chaos (429/503, see SetChaos), UnknownUser (404),
// ProvisionLater (404 or 400), then each site:
// OmitSite, FailSite, unknown site, Chaos SiteTransient. Only calls that get as far as
// a check consume the fault behind it.
type faults struct {
	throttleN     int
	throttleValue string

	unavailableN      int
	unavailableStatus int

	failSites    map[string]siteFailure // canonical site id → failure
	omitSites    map[string]int         // canonical site id → remaining add calls
	unknownUsers map[string]bool        // lower-case user id
	// provisioning are users not visible yet (ProvisionLater), and
	// notProvisioned how many calls each was answered so.
	provisioning   map[string]provisioning
	notProvisioned map[string]int
	// throttleUsers: lower-case user id → the next calls for that user
	// answered 429 (ThrottleUser).
	throttleUsers map[string]userThrottle

	upperCaseIDs    bool
	extraErrorEntry bool

	tokenFailN      int
	tokenFailStatus int

	batchFailN          int
	batchFailStatus     int
	batchFailRetryAfter string
}

type userThrottle struct {
	n     int
	value string // Retry-After, verbatim
}

type siteFailure struct {
	code    string
	message string // empty: the code's usual message
	n       int
}

func newFaults() faults {
	return faults{
		failSites:      make(map[string]siteFailure),
		omitSites:      make(map[string]int),
		unknownUsers:   make(map[string]bool),
		provisioning:   make(map[string]provisioning),
		notProvisioned: make(map[string]int),
		throttleUsers:  make(map[string]userThrottle),
	}
}

// SetLatency replaces the latency added to every later Graph call (it does
// not expire; SetLatency(0) removes it).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetOpLatency adds d to every later call of one operation ("add",
// "remove", OpFollowingSites or OpGetSite), on top of SetLatency; 0 removes it. Tests use it to hold one
// call of a batch in flight while another has already been answered.
func (s *Server) SetOpLatency(op string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opLatency[op] = d
}

// Throttle makes the next n Graph calls answer 429 with retryAfter as the
// Retry-After header verbatim ("1", "0.5" or an HTTP date). Each such answer
// announces an app-wide deadline used for Early detection. A later Throttle
// replaces a pending one; n <= 0 cancels.
func (s *Server) Throttle(n int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.throttleN = max(n, 0)
	s.faults.throttleValue = retryAfter
}

// ThrottleUser makes the next n Graph calls for userID (matched
// case-insensitively) answer 429 with retryAfter as the Retry-After header
// verbatim, before the other call-wide faults; other users' calls proceed.
// Inside a $batch only that user's requests are refused, as Graph throttles
// each request on its own. Each such answer announces an app-wide deadline
// (Early). n <= 0 cancels; ClearFaults too.
func (s *Server) ThrottleUser(userID string, n int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := strings.ToLower(userID)
	if n <= 0 {
		delete(s.faults.throttleUsers, k)
		return
	}
	s.faults.throttleUsers[k] = userThrottle{n: n, value: retryAfter}
}

// Unavailable makes the next n Graph calls answer status (503 or 504) with a
// Graph error body and no Retry-After. Pending Throttle calls come first.
func (s *Server) Unavailable(n int, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.unavailableN = max(n, 0)
	s.faults.unavailableStatus = status
}

// FailSite makes siteID fail with code inside a 207 the next n times it
// appears in a call (add or remove); other sites in those calls proceed.
// The site's state is left unchanged by a failed entry.
func (s *Server) FailSite(siteID, code string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := lookupKey(siteID)
	if n <= 0 {
		delete(s.faults.failSites, k)
		return
	}
	s.faults.failSites[k] = siteFailure{code: code, n: n}
}

// FailSiteWith is FailSite with Graph's error message given, for hostile
// answers (an empty code, a message of megabytes).
func (s *Server) FailSiteWith(siteID, code, message string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		delete(s.faults.failSites, lookupKey(siteID))
		return
	}
	s.faults.failSites[lookupKey(siteID)] = siteFailure{code: code, message: message, n: n}
}

// OmitSite makes the next n add calls containing siteID answer 207 without
// any entry for siteID, and not follow it.
func (s *Server) OmitSite(siteID string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := lookupKey(siteID)
	if n <= 0 {
		delete(s.faults.omitSites, k)
		return
	}
	s.faults.omitSites[k] = n
}

// UnknownUser makes every later call for userID answer 404. It does not
// expire; ClearFaults undoes it.
func (s *Server) UnknownUser(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.unknownUsers[strings.ToLower(userID)] = true
}

// UpperCaseIDs makes answers carry upper-case GUIDs (hostnames unchanged).
func (s *Server) UpperCaseIDs(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.upperCaseIDs = on
}

// ExtraErrorEntry makes add 207s also carry an error entry for an id that was
// not requested, as the documentation's own example does.
func (s *Server) ExtraErrorEntry(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.extraErrorEntry = on
}

// FailTokens makes the next n token requests answer status (for example
// 500 or 503) with an OAuth error body, whatever their credentials, as an
// identity provider having trouble does. n <= 0 cancels; ClearFaults too.
func (s *Server) FailTokens(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.tokenFailN = max(n, 0)
	s.faults.tokenFailStatus = status
}

// RevokeTokens invalidates every token issued so far; later calls carrying
// them answer 401 InvalidAuthenticationToken. Tokens issued afterwards work.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// ClearFaults drops every pending or standing fault (Throttle,
// ThrottleUser, Unavailable, FailSite, OmitSite, UnknownUser,
// ProvisionLater, UpperCaseIDs, ExtraErrorEntry, FailTokens, FailBatch).
// Latency, the rate limit, the budget and announced
// Retry-After deadlines stay.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = newFaults()
}

// lookupKey is the canonical key of an id given to a fault setter; ids that
// do not parse are matched as lower-case strings.
func lookupKey(id string) string {
	if site, err := parseSiteID(id); err == nil {
		return site.key()
	}
	return strings.ToLower(id)
}

// admitLocked applies the call-wide faults and the rate limit in that order
// and returns a non-nil reply when the call must be refused.
func (s *Server) admitLocked(now time.Time, user string) *reply {
	f := &s.faults
	if t, ok := f.throttleUsers[strings.ToLower(user)]; ok {
		if t.n--; t.n <= 0 {
			delete(f.throttleUsers, strings.ToLower(user))
		} else {
			f.throttleUsers[strings.ToLower(user)] = t
		}
		wait, until := parseRetryAfter(t.value, now)
		return &reply{err: throttledError(), retryAfter: t.value, wait: wait, until: until, announce: true, throttled: true}
	}
	if f.throttleN > 0 {
		f.throttleN--
		wait, until := parseRetryAfter(f.throttleValue, now)
		return &reply{
			err:        throttledError(),
			retryAfter: f.throttleValue,
			wait:       wait,
			until:      until,
			announce:   true,
			throttled:  true,
		}
	}
	if f.unavailableN > 0 {
		f.unavailableN--
		return &reply{err: unavailableError(f.unavailableStatus)}
	}
	if s.limiter != nil {
		r := s.limiter.ReserveN(now, 1)
		if !r.OK() {
			return &reply{err: throttledError(), retryAfter: "1", wait: time.Second, announce: true, throttled: true}
		}
		if delay := r.DelayFrom(now); delay > 0 {
			// A refused call must not consume the token it would have waited
			// for, or a client that honours Retry-After would be refused again.
			r.CancelAt(now)
			wait := ceilMillis(delay)
			return &reply{err: throttledError(), retryAfter: formatSeconds(wait), wait: wait, announce: true, throttled: true}
		}
	}
	return nil
}

// maxRetryAfter caps parsed waits so absurd values cannot overflow.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After value: delta seconds (fractional
// allowed) or an HTTP date. until is non-zero only for a date.
func parseRetryAfter(v string, now time.Time) (wait time.Duration, until time.Time) {
	v = strings.TrimSpace(v)
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs <= 0 || math.IsNaN(secs) {
			return 0, time.Time{}
		}
		secs = min(secs, maxRetryAfter.Seconds())
		return time.Duration(secs * float64(time.Second)), time.Time{}
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), t
	}
	return 0, time.Time{}
}

// ceilMillis rounds d up to whole milliseconds so that the announced wait is
// never shorter than the bucket's delay.
func ceilMillis(d time.Duration) time.Duration {
	return (d + time.Millisecond - 1).Truncate(time.Millisecond)
}

// formatSeconds renders d as decimal seconds without trailing zeros ("0.25",
// "2").
func formatSeconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}
