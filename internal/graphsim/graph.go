package graphsim

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// headerClientRequestID is the client-request-id header key in canonical
// form, so that looking it up allocates nothing.
const headerClientRequestID = "Client-Request-Id"

// The two followedSites operations and the beta followingSites PATCH, as
// Call.Op reports them.
const (
	opAdd    = "add"
	opRemove = "remove"
	// OpFollowingSites is Call.Op for PATCH /beta/users/{id}/followingSites.
	OpFollowingSites = "followingSites"
)

// graphRequest is what the handler learnt about a call, for the record.
type graphRequest struct {
	op, user string
	ids      []string
	actions  []string // per id, beta calls only
}

// serveGraph answers POST /v1.0/users/{userId}/followedSites/{add|remove}
// and the older PATCH /beta/users/{userId}/followingSites (see beta.go),
// and GET /v1.0/users/{userId}/followedSites for people looking on.
func (s *Server) serveGraph(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		if user, ok := listRoute(r.URL); ok {
			s.serveFollowedList(w, r, user)
			return
		}
		if key, ok := siteRoute(r.URL); ok {
			s.serveSite(w, r, key, s.countHTTPRequest())
			return
		}
	}
	httpRequest := s.countHTTPRequest()
	if isBatchRoute(r.URL) {
		s.serveBatch(w, r, httpRequest)
		return
	}
	call := s.beginCall(time.Now(), r.Header.Get(headerClientRequestID), r.UserAgent(), httpRequest, "")
	var req graphRequest
	rep := s.handleGraph(r, &req)
	if rep == nil {
		// The client went away or the server is closing: nobody to answer.
		s.finishCall(call, callResult{op: req.op, user: req.user, ids: req.ids, actions: req.actions})
		return
	}
	status := rep.status()
	if err := s.writeGraph(w, r, rep); err != nil {
		status = 0
	}
	var retryAfter time.Duration
	if rep.retryAfter != "" {
		retryAfter = rep.wait
	}
	var deadline time.Time
	if rep.announce {
		// Announce once the answer is decided and written to the buffer, yet
		// before it is flushed: the deadline then never precedes what a
		// client that read the answer could know, and is in place before
		// that client can send again.
		deadline = rep.until
		if deadline.IsZero() {
			deadline = time.Now().Add(rep.wait)
		}
		s.announce(deadline)
	}
	// The record is complete before the client can read the answer, so a
	// client that got its answer finds the call in Calls.
	s.finishCall(call, callResult{op: req.op, user: req.user, ids: req.ids, actions: req.actions, status: status,
		retryAfter: retryAfter, answered: time.Now(), notBefore: deadline, throttled: rep.throttled})
	// Answered is then moved to the moment the answer left for the client,
	// the earliest the client could know it (see Call.Answered).
	if f, ok := w.(http.Flusher); ok && status != 0 {
		f.Flush()
		s.flushed(call, time.Now())
	}
}

// handleGraph decides the answer; nil means no answer can be sent.
func (s *Server) handleGraph(r *http.Request, req *graphRequest) *reply {
	// Read the body before sleeping: the server only notices a client that
	// hangs up (and cancels r.Context) once the body has been consumed.
	buf := s.buffer()
	defer s.bufs.Put(buf)
	rerr := readBody(buf, r.Body)
	in := graphInput{method: r.Method, url: r.URL, authorization: r.Header.Get("Authorization"), body: buf.Bytes(), readErr: rerr}
	return s.decide(r.Context(), in, req, true)
}

// graphInput is one Graph call as decide judges it: a direct HTTP request,
// or one request inside a $batch envelope.
type graphInput struct {
	method        string
	url           *url.URL
	authorization string
	body          []byte
	readErr       error
}

// decide judges one call, direct or inside a $batch, by the same rules:
// route, method, token, body, poison, faults, rate limit, budget (one call
// each), chaos, then the sites. wait adds the call's latency first; the
// requests of a $batch share the envelope's instead. nil means no answer
// can be sent.
func (s *Server) decide(ctx context.Context, in graphInput, req *graphRequest, wait bool) *reply {
	op, user, gerr := route(in.url)
	s.mu.Lock()
	latency := s.latency + s.opLatency[op]
	chaos := s.chaosLocked()
	if chaos != nil {
		latency += chaos.jitter
	}
	s.mu.Unlock()
	if wait {
		if err := s.pause(ctx, latency); err != nil {
			return nil
		}
	}

	req.op, req.user = op, user
	if gerr != nil {
		return &reply{err: gerr}
	}
	method := http.MethodPost
	if op == OpFollowingSites {
		method = http.MethodPatch
	}
	if in.method != method {
		return &reply{
			err:    &graphError{status: http.StatusMethodNotAllowed, code: "Request_BadRequest", message: fmt.Sprintf("The HTTP method '%s' is not allowed for this resource.", in.method)},
			header: http.Header{"Allow": {method}},
		}
	}
	if rep := s.authorize(in.authorization); rep != nil {
		return rep
	}
	var ids, actions []string
	var berr error
	if op == OpFollowingSites {
		ids, actions, berr = decodeBetaBody(in.body, in.readErr)
	} else {
		ids, berr = decodeBody(in.body, in.readErr)
	}
	req.ids, req.actions = ids, actions
	if berr != nil {
		return &reply{err: &graphError{status: http.StatusBadRequest, code: "invalidRequest", message: berr.Error()}}
	}
	if s.poisoned(ids) {
		return &reply{err: &graphError{status: http.StatusBadRequest, code: "invalidRequest", message: "One of the provided arguments is not acceptable."}}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if rep := s.admitLocked(now, user); rep != nil {
		return rep
	}
	rep, quota := s.spendBudgetLocked(now)
	if rep != nil {
		return rep
	}
	// Whatever becomes of a call the budget admitted, its answer carries
	// the budget's RateLimit headers.
	return withHeader(s.admittedLocked(op, user, ids, actions, chaos, now), quota)
}

// admittedLocked answers a call the rate limit and the budget admitted.
func (s *Server) admittedLocked(op, user string, ids, actions []string, chaos *chaosVerdict, now time.Time) *reply {
	if rep := admitChaos(chaos, now); rep != nil {
		return rep
	}
	if s.faults.unknownUsers[strings.ToLower(user)] {
		return &reply{err: &graphError{
			status:    http.StatusNotFound,
			code:      "Request_ResourceNotFound",
			innerCode: "itemNotFound",
			message:   fmt.Sprintf("Resource '%s' does not exist or one of its queried reference-property objects are not present.", user),
		}}
	}
	if rep := s.provisioningLocked(user, now); rep != nil {
		return rep
	}
	if op == OpFollowingSites {
		return s.applyBetaLocked(user, ids, actions, chaos)
	}
	return s.applyLocked(op, user, ids, chaos)
}

// poisoned reports whether ids name one of Options.PoisonSites. Like a
// malformed body, a poison id fails the whole call, and Graph's answer does
// not say which id it was.
func (s *Server) poisoned(ids []string) bool {
	if s.poison == nil {
		return false
	}
	for _, id := range ids {
		if s.poison[lookupKey(id)] {
			return true
		}
	}
	return false
}

// buffer returns an empty buffer from the pool; callers put it back.
func (s *Server) buffer() *bytes.Buffer {
	if b, ok := s.bufs.Get().(*bytes.Buffer); ok {
		b.Reset()
		return b
	}
	return new(bytes.Buffer)
}

// route parses the escaped path so that an escaped "/" inside the user id
// (%2F) stays part of the id instead of shifting the segments.
func route(u *url.URL) (op, user string, gerr *graphError) {
	path := u.EscapedPath()
	// strings.Split without the allocation for the six parts of a good path.
	var buf [6]string
	parts := buf[:0]
	for rest := path; ; {
		part, after, more := strings.Cut(rest, "/")
		parts = append(parts, part)
		if !more {
			break
		}
		rest = after
	}
	if len(parts) == 5 && parts[0] == "" && strings.EqualFold(parts[1], "beta") && strings.EqualFold(parts[2], "users") &&
		strings.EqualFold(parts[4], "followingSites") {
		user, err := url.PathUnescape(parts[3])
		if err != nil || user == "" {
			return "", "", &graphError{status: http.StatusBadRequest, code: "BadRequest", message: fmt.Sprintf("Invalid user segment '%s'.", parts[3])}
		}
		return OpFollowingSites, user, nil
	}
	if len(parts) < 3 || parts[0] != "" || !strings.EqualFold(parts[1], "v1.0") || !strings.EqualFold(parts[2], "users") {
		return "", "", &graphError{status: http.StatusNotFound, code: "UnknownError", message: fmt.Sprintf("No resource at '%s'.", path)}
	}
	if len(parts) != 6 || !strings.EqualFold(parts[4], "followedSites") {
		return "", "", &graphError{status: http.StatusBadRequest, code: "BadRequest", message: fmt.Sprintf("Resource not found for the segment '%s'.", strings.Join(parts[min(4, len(parts)-1):], "/"))}
	}
	user, err := url.PathUnescape(parts[3])
	if err != nil || user == "" {
		return "", "", &graphError{status: http.StatusBadRequest, code: "BadRequest", message: fmt.Sprintf("Invalid user segment '%s'.", parts[3])}
	}
	switch strings.ToLower(parts[5]) {
	case opAdd:
		return opAdd, user, nil
	case opRemove:
		return opRemove, user, nil
	}
	return "", user, &graphError{status: http.StatusBadRequest, code: "BadRequest", message: fmt.Sprintf("Resource not found for the segment '%s'.", parts[5])}
}

// authorize requires a bearer token this sim issued, not revoked or expired;
// h is the request's Authorization header.
func (s *Server) authorize(h string) *reply {
	unauthorized := func(msg string) *reply {
		return &reply{
			err: &graphError{status: http.StatusUnauthorized, code: "InvalidAuthenticationToken", message: msg},
			header: http.Header{"WWW-Authenticate": {fmt.Sprintf(
				`Bearer realm="", authorization_uri="%s%s/oauth2/v2.0/authorize", client_id="00000003-0000-0000-c000-000000000000"`,
				s.authorityURL, s.tenantID)}},
		}
	}
	if h == "" {
		return unauthorized("Access token is empty.")
	}
	scheme, token, ok := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return unauthorized("CompactToken parsing failed with error code: 80049217")
	}
	s.mu.Lock()
	expiry, known := s.tokens[token]
	s.mu.Unlock()
	if !known {
		return unauthorized("Access token validation failure.")
	}
	if !time.Now().Before(expiry) {
		return unauthorized("Lifetime validation failed, the token is expired.")
	}
	return nil
}

// docsSite stands in for the unrequested id when no requested id parses; it
// is the id of the error entry in the documentation's 207 example.
func docsSite() siteID {
	return siteID{host: "contoso.sharepoint.com", site: "da60e844-ba1d-49bc-b4d4-d5e36bae9019", web: "512a596e-90a1-49e3-9b48-bfa80bee8740"}
}

// keySet is a set of strings that needs no map for the few keys of a
// typical call.
type keySet struct {
	few  [32]string
	n    int
	many map[string]struct{}
}

// add inserts k and reports whether it was new.
func (ks *keySet) add(k string) bool {
	if ks.many != nil {
		if _, ok := ks.many[k]; ok {
			return false
		}
		ks.many[k] = struct{}{}
		return true
	}
	for _, f := range ks.few[:ks.n] {
		if f == k {
			return false
		}
	}
	if ks.n < len(ks.few) {
		ks.few[ks.n] = k
		ks.n++
		return true
	}
	ks.many = make(map[string]struct{}, 2*len(ks.few))
	for _, f := range ks.few {
		ks.many[f] = struct{}{}
	}
	ks.many[k] = struct{}{}
	return true
}

// echoID is id as an answer names it: rendered like Graph when well-formed
// (info not nil), verbatim otherwise.
func echoID(id string, info *siteInfo, upper bool) string {
	if info == nil {
		return id
	}
	return info.site.render(upper)
}

// siteOutcome is what one call did with one of its sites.
type siteOutcome int

const (
	siteRepeated siteOutcome = iota // already considered in this call
	siteOmitted                     // left out of the answer (OmitSites)
	siteFailed                      // answered with an error entry
	siteApplied                     // followed or unfollowed
)

// applySiteLocked considers one site of a call once: it changes followed
// state and returns the site's entry (its error entry when it failed, its
// site object when an add applied it, nil otherwise) and its parsed info.
func (s *Server) applySiteLocked(op, userKey, id string, seen *keySet, chaos *chaosVerdict) ([]byte, siteOutcome, *siteInfo) {
	f := &s.faults
	upper := f.upperCaseIDs
	info := s.infoLocked(id)
	k := strings.ToLower(id)
	if info != nil {
		k = info.key
	}
	if !seen.add(k) {
		return nil, siteRepeated, info
	}
	if op == opAdd && f.omitSites[k] > 0 {
		f.omitSites[k]--
		if f.omitSites[k] == 0 {
			delete(f.omitSites, k)
		}
		return nil, siteOmitted, info
	}
	if fail, ok := f.failSites[k]; ok {
		fail.n--
		if fail.n <= 0 {
			delete(f.failSites, k)
		} else {
			f.failSites[k] = fail
		}
		return errorEntryWithMessage(echoID(id, info, upper), fail.code, fail.message), siteFailed, info
	}
	if info == nil || !s.knownInfoLocked(info) {
		return errorEntryJSON(echoID(id, info, upper), "invalidRequest"), siteFailed, info
	}
	if chaos.siteFails() {
		return errorEntryJSON(echoID(id, info, upper), "serviceNotAvailable"), siteFailed, info
	}
	if op == opAdd {
		s.followLocked(userKey, k)
		s.effectLocked(userKey, k, EffectFollow)
		return info.object(upper), siteApplied, info
	}
	s.unfollowLocked(userKey, k)
	s.effectLocked(userKey, k, EffectUnfollow)
	return nil, siteApplied, info
}

// applyLocked changes followed state and builds the answer. Each distinct
// site is considered once per call, in request order.
func (s *Server) applyLocked(op, user string, ids []string, chaos *chaosVerdict) *reply {
	userKey := strings.ToLower(user)
	// Never nil: "value" must be [] rather than null when everything was omitted.
	entries := make([][]byte, 0, len(ids))
	failed, omitted := false, false
	var first *siteID
	var seen keySet
	for _, id := range ids {
		entry, out, info := s.applySiteLocked(op, userKey, id, &seen, chaos)
		if info != nil && first == nil {
			first = &info.site
		}
		switch out {
		case siteOmitted:
			omitted = true
		case siteFailed:
			failed = true
		}
		if entry != nil {
			entries = append(entries, entry)
		}
	}

	switch {
	case op == opAdd && !failed && !omitted:
		return &reply{code: http.StatusOK, value: entries}
	case op == opAdd:
		return &reply{code: http.StatusMultiStatus, value: s.withExtraErrorLocked(entries, first)}
	case !failed:
		return &reply{code: http.StatusNoContent}
	default:
		// Remove never adds success entries, so entries holds only failures.
		return &reply{code: http.StatusMultiStatus, value: entries}
	}
}

// withExtraErrorLocked puts the ExtraErrorEntry fault's error entry, for an
// id that was not requested, in front of a 207's entries.
func (s *Server) withExtraErrorLocked(entries [][]byte, first *siteID) [][]byte {
	if !s.faults.extraErrorEntry {
		return entries
	}
	extra := docsSite()
	if first != nil {
		extra = first.sibling()
	}
	return append([][]byte{errorEntryJSON(extra.render(s.faults.upperCaseIDs), "invalidRequest")}, entries...)
}
