package graphsim

import (
	"slices"
	"time"
)

// Call is one Graph request as the sim saw and answered it.
type Call struct {
	At      time.Time // when the request arrived
	UserID  string    // as it appeared in the path (unescaped)
	Op      string    // "add", "remove" or "followingSites" (beta PATCH); empty for an unknown route
	SiteIDs []string  // ids in the request body; for a getSite call, the id answered
	// SiteURL is, for a getSite call (Op OpGetSite), the URL asked about:
	// https://, the hostname in lower case and the unescaped path.
	SiteURL string
	// Actions holds, for a followingSites call, each SiteIDs entry's
	// "@oneDrive.action" ("follow" or "unfollow"); nil for other calls.
	Actions         []string
	Status          int           // status answered; 0 while in flight or when no answer was sent
	RetryAfter      time.Duration // when a 429/503 carried Retry-After
	ClientRequestID string
	UserAgent       string
	Early           bool // arrived before a previously announced Retry-After deadline had passed
	// Answered is when the answer was flushed to the client, the first
	// moment it could read it (for a moment after the answer is complete,
	// when it was buffered); zero when none was sent.
	Answered time.Time
	// NotBefore is the app-wide deadline a throttling answer announced
	// (a 429, or a Budget's 503, with Retry-After); zero for other answers.
	NotBefore time.Time
	// Throttled is set when the call was refused for the app's rate,
	// whatever the status (429, or 503 for a Budget answering so): by
	// Throttle, RateLimit, Budget or Chaos's Throttle.
	Throttled bool
	// HTTPRequest is the ordinal (from 1, since the last Reset) of the HTTP
	// request that carried the call: its own, or the $batch envelope it
	// was one request of. Calls sharing it came in one envelope.
	HTTPRequest int
	// BatchItemID is the call's id inside its $batch envelope; empty for a
	// direct call.
	BatchItemID string
}

// callResult is what a Graph call's handling learnt and answered.
type callResult struct {
	op, user, siteURL   string
	ids, actions        []string
	status              int
	retryAfter          time.Duration
	answered, notBefore time.Time
	throttled           bool
}

// beginCall records an arriving Graph request. Early is judged here, against
// the deadline announced before this arrival.
func (s *Server) beginCall(at time.Time, clientRequestID, userAgent string, httpRequest int, batchItemID string) *Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &Call{
		At:              at,
		ClientRequestID: clientRequestID,
		UserAgent:       userAgent,
		Early:           at.Before(s.deadline),
		HTTPRequest:     httpRequest,
		BatchItemID:     batchItemID,
	}
	if c.Early {
		s.earlyCalls++
	}
	s.calls = append(s.calls, c)
	return c
}

// flushed moves the call's Answered to when its answer was flushed.
func (s *Server) flushed(c *Call, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.Answered = at
}

// finishCall fills in what the handler learnt and answered.
func (s *Server) finishCall(c *Call, r callResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.Op = r.op
	c.UserID = r.user
	c.SiteIDs = r.ids
	c.SiteURL = r.siteURL
	c.Actions = r.actions
	c.Status = r.status
	c.RetryAfter = r.retryAfter
	c.Answered = r.answered
	c.NotBefore = r.notBefore
	c.Throttled = r.throttled
}

// announce extends the app-wide Retry-After deadline; it only ever moves
// later.
func (s *Server) announce(deadline time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if deadline.After(s.deadline) {
		s.deadline = deadline
	}
}

// Calls returns a copy of the Graph calls, in arrival order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Call, len(s.calls))
	for i, c := range s.calls {
		out[i] = *c
		out[i].SiteIDs = slices.Clone(c.SiteIDs)
		out[i].Actions = slices.Clone(c.Actions)
	}
	return out
}

// countHTTPRequest counts an arriving HTTP request to the Graph listener
// (a direct call or a $batch envelope) and returns its ordinal.
func (s *Server) countHTTPRequest() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.httpRequests++
	return s.httpRequests
}

// HTTPRequests counts the HTTP requests that reached the Graph listener
// since the last Reset, the followed-sites listing aside: one per direct
// call and one per $batch envelope, however many calls it carried (those
// are in Calls, one each).
func (s *Server) HTTPRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpRequests
}

// CallCount is the number of Graph calls that arrived since the last Reset.
func (s *Server) CallCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// EarlyCalls counts calls that arrived before an announced Retry-After
// deadline had passed; it stays 0 for a client that honours Retry-After.
// The deadline is announced just before the 429 is flushed, so a call a
// concurrent client had already sent, but which reaches the handler after
// that moment, counts too: expect 0 only when the client cannot have had
// another call in flight.
func (s *Server) EarlyCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.earlyCalls
}

// TokenRequests counts POSTs to the token endpoint since the last Reset.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenRequests
}

// TokenScopes lists the scope parameter of each token request since the last
// Reset, in arrival order.
func (s *Server) TokenScopes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.tokenScopes)
}

// TokenGrants lists how each token that was issued since the last Reset
// was asked for (GrantSecret, GrantCertificate, GrantFederated or
// GrantManaged), in issue order.
func (s *Server) TokenGrants() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.tokenGrants)
}

// IssuedTokens lists every access token the token endpoint issued, revoked
// ones included, in issue order, so that tests can look for them where
// they must never appear (logs, metrics, dead letters). Reset keeps them.
func (s *Server) IssuedTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.issued)
}

// Reset forgets recorded calls and counters. Followed state, faults, issued
// tokens and announced deadlines stay.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
	s.httpRequests = 0
	s.earlyCalls = 0
	s.tokenRequests = 0
	s.tokenScopes = nil
	s.tokenGrants = nil
}
