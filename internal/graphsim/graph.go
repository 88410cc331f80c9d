package graphsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The two followedSites operations, as Call.Op reports them.
const (
	opAdd    = "add"
	opRemove = "remove"
)

// graphRequest is what the handler learnt about a call, for the record.
type graphRequest struct {
	op, user string
	ids      []string
}

// serveGraph answers POST /v1.0/users/{userId}/followedSites/{add|remove}.
func (s *Server) serveGraph(w http.ResponseWriter, r *http.Request) {
	call := s.beginCall(time.Now(), r.Header.Get("client-request-id"), r.UserAgent())
	var req graphRequest
	rep := s.handleGraph(r, &req)
	if rep == nil {
		// The client went away or the server is closing: nobody to answer.
		s.finishCall(call, req.op, req.user, req.ids, 0, 0)
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
	if rep.announce {
		// Announce once the answer is decided and written to the buffer, yet
		// before the handler returns and the server flushes it: the deadline
		// then never precedes what a client that read the answer could know,
		// and is in place before that client can send again.
		deadline := rep.until
		if deadline.IsZero() {
			deadline = time.Now().Add(rep.wait)
		}
		s.announce(deadline)
	}
	s.finishCall(call, req.op, req.user, req.ids, status, retryAfter)
}

// handleGraph decides the answer; nil means no answer can be sent.
func (s *Server) handleGraph(r *http.Request, req *graphRequest) *reply {
	// Read the body before sleeping: the server only notices a client that
	// hangs up (and cancels r.Context) once the body has been consumed.
	raw, rerr := readBody(r.Body)

	op, user, gerr := route(r.URL)
	s.mu.Lock()
	latency := s.latency + s.opLatency[op]
	s.mu.Unlock()
	if err := s.pause(r.Context(), latency); err != nil {
		return nil
	}

	req.op, req.user = op, user
	if gerr != nil {
		return &reply{err: gerr}
	}
	if r.Method != http.MethodPost {
		return &reply{
			err:    &graphError{status: http.StatusMethodNotAllowed, code: "Request_BadRequest", message: fmt.Sprintf("The HTTP method '%s' is not allowed for this resource.", r.Method)},
			header: http.Header{"Allow": {http.MethodPost}},
		}
	}
	if rep := s.authorize(r); rep != nil {
		return rep
	}
	ids, berr := decodeBody(raw, rerr)
	req.ids = ids
	if berr != nil {
		return &reply{err: &graphError{status: http.StatusBadRequest, code: "invalidRequest", message: berr.Error()}}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if rep := s.admitLocked(time.Now()); rep != nil {
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
	return s.applyLocked(op, user, ids)
}

// route parses the escaped path so that an escaped "/" inside the user id
// (%2F) stays part of the id instead of shifting the segments.
func route(u *url.URL) (op, user string, gerr *graphError) {
	path := u.EscapedPath()
	parts := strings.Split(path, "/")
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

// authorize requires a bearer token this sim issued, not revoked or expired.
func (s *Server) authorize(r *http.Request) *reply {
	unauthorized := func(msg string) *reply {
		return &reply{
			err: &graphError{status: http.StatusUnauthorized, code: "InvalidAuthenticationToken", message: msg},
			header: http.Header{"WWW-Authenticate": {fmt.Sprintf(
				`Bearer realm="", authorization_uri="%s%s/oauth2/v2.0/authorize", client_id="00000003-0000-0000-c000-000000000000"`,
				s.authorityURL, s.tenantID)}},
		}
	}
	h := r.Header.Get("Authorization")
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

// errBody classifies request bodies that are not {"value":[{"id":...}]}.
var errBody = errors.New("invalid request body")

// readBody reads at most maxBodyBytes; a larger body is an error.
func readBody(body io.Reader) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(body, maxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if len(raw) > maxBodyBytes {
		return nil, fmt.Errorf("body larger than %d bytes: %w", maxBodyBytes, errBody)
	}
	return raw, nil
}

// decodeBody returns the ids in request order, or whatever it managed to read
// along with an error for a malformed body. readErr is readBody's error.
func decodeBody(raw []byte, readErr error) ([]string, error) {
	if readErr != nil {
		return nil, readErr
	}
	var in struct {
		Value []struct {
			ID *string `json:"id"`
		} `json:"value"`
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, fmt.Errorf("decode body: %w: %w", err, errBody)
	}
	if len(in.Value) == 0 {
		return nil, fmt.Errorf("body has no value entries: %w", errBody)
	}
	ids := make([]string, 0, len(in.Value))
	for i, v := range in.Value {
		if v.ID == nil || *v.ID == "" {
			return ids, fmt.Errorf("value[%d] has no id: %w", i, errBody)
		}
		ids = append(ids, *v.ID)
	}
	return ids, nil
}

// docsSite stands in for the unrequested id when no requested id parses; it
// is the id of the error entry in the documentation's 207 example.
func docsSite() siteID {
	return siteID{host: "contoso.sharepoint.com", site: "da60e844-ba1d-49bc-b4d4-d5e36bae9019", web: "512a596e-90a1-49e3-9b48-bfa80bee8740"}
}

// applyLocked changes followed state and builds the answer. Each distinct
// site is considered once per call, in request order.
func (s *Server) applyLocked(op, user string, ids []string) *reply {
	f := &s.faults
	upper := f.upperCaseIDs
	userKey := strings.ToLower(user)
	entries := []any{} // "value" must be [] rather than null when everything was omitted
	failed, omitted := false, false
	var first *siteID
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		k := lookupKey(id)
		if seen[k] {
			continue
		}
		seen[k] = true
		site, perr := parseSiteID(id)
		if perr == nil && first == nil {
			first = &site
		}
		echo := id
		if perr == nil {
			echo = site.render(upper)
		}

		if op == opAdd && f.omitSites[k] > 0 {
			f.omitSites[k]--
			if f.omitSites[k] == 0 {
				delete(f.omitSites, k)
			}
			omitted = true
			continue
		}
		if fail, ok := f.failSites[k]; ok {
			fail.n--
			if fail.n <= 0 {
				delete(f.failSites, k)
			} else {
				f.failSites[k] = fail
			}
			entries = append(entries, newErrorEntry(echo, fail.code))
			failed = true
			continue
		}
		if perr != nil || !s.knownLocked(k) {
			entries = append(entries, newErrorEntry(echo, "invalidRequest"))
			failed = true
			continue
		}
		if op == opAdd {
			s.followLocked(userKey, k)
			entries = append(entries, site.object(upper))
		} else {
			s.unfollowLocked(userKey, k)
		}
	}

	switch {
	case op == opAdd && !failed && !omitted:
		return &reply{code: http.StatusOK, body: valueBody{Value: entries}}
	case op == opAdd:
		if f.extraErrorEntry {
			extra := docsSite()
			if first != nil {
				extra = first.sibling()
			}
			entries = append([]any{newErrorEntry(extra.render(upper), "invalidRequest")}, entries...)
		}
		return &reply{code: http.StatusMultiStatus, body: valueBody{Value: entries}}
	case !failed:
		return &reply{code: http.StatusNoContent}
	default:
		// Remove never adds success entries, so entries holds only failures.
		return &reply{code: http.StatusMultiStatus, body: valueBody{Value: entries}}
	}
}
