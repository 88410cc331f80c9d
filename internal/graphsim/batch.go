package graphsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxBatchRequests is the most requests Graph accepts in one $batch.
const MaxBatchRequests = 20

// isBatchRoute reports whether u is Graph's JSON batching endpoint,
// /v1.0/$batch ("$" possibly escaped).
func isBatchRoute(u *url.URL) bool {
	return strings.EqualFold(u.Path, "/v1.0/$batch")
}

// batchRequest is one request of a $batch envelope as clients send it.
type batchRequest struct {
	ID      string            `json:"id"`
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
}

// batchResponse is one answer inside the envelope's answer.
type batchResponse struct {
	ID      string            `json:"id"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"`
}

// batchItem is an envelope request on its way through serveBatch.
type batchItem struct {
	in   batchRequest
	call *Call
	req  graphRequest
	rep  *reply
	// bad is the item's own 400 when the request is malformed (an absolute
	// url, a body without Content-Type, no method); it is then not judged.
	bad *graphError
	// notBefore is the deadline the item's throttle announced.
	notBefore time.Time
}

// serveBatch answers POST /v1.0/$batch as Graph does: the envelope is
// validated whole (JSON, at most MaxBatchRequests requests, ids present and
// unique case-insensitively; 400 otherwise) and its token checked (401);
// then each request is judged exactly as a direct call (see decide), faults,
// rate limit and budget spent one by one, and answered on its own with its
// status, headers (Retry-After, RateLimit-*) and body. The envelope is 200
// whatever its requests got; the answers come in reverse order, so clients
// must match them by id. The envelope waits the latency once (the largest
// of its operations'). Each request is recorded as a Call with the
// envelope's HTTPRequest ordinal.
func (s *Server) serveBatch(w http.ResponseWriter, r *http.Request, httpRequest int) {
	buf := s.buffer()
	defer s.bufs.Put(buf)
	rerr := readBody(buf, r.Body)
	if r.Method != http.MethodPost {
		s.writeEnvelopeError(w, r, &reply{
			err:    &graphError{status: http.StatusMethodNotAllowed, code: "Request_BadRequest", message: fmt.Sprintf("The HTTP method '%s' is not allowed for this resource.", r.Method)},
			header: http.Header{"Allow": {http.MethodPost}},
		})
		return
	}
	items, gerr := parseBatch(buf.Bytes(), rerr)
	if gerr != nil {
		s.writeEnvelopeError(w, r, &reply{err: gerr})
		return
	}
	if rep := s.authorize(r.Header.Get("Authorization")); rep != nil {
		s.writeEnvelopeError(w, r, rep)
		return
	}

	if rep := s.failBatch(); rep != nil {
		s.writeEnvelopeError(w, r, rep)
		return
	}
	now := time.Now()
	var latency time.Duration
	s.mu.Lock()
	for _, it := range items {
		op, _, _ := route(it.url())
		latency = max(latency, s.opLatency[op])
	}
	latency += s.latency
	s.mu.Unlock()
	for _, it := range items {
		crid := headerValue(it.in.Headers, headerClientRequestID)
		if crid == "" {
			crid = r.Header.Get(headerClientRequestID)
		}
		it.call = s.beginCall(now, crid, r.UserAgent(), httpRequest, it.in.ID)
	}
	if err := s.pause(r.Context(), latency); err != nil {
		s.finishItems(items, time.Time{})
		return
	}
	for _, it := range items {
		if it.bad != nil {
			it.rep = &reply{err: it.bad}
			continue
		}
		in := graphInput{method: it.in.Method, url: it.url(), authorization: r.Header.Get("Authorization"), body: it.in.Body}
		if it.rep = s.decide(r.Context(), in, &it.req, false); it.rep == nil {
			s.finishItems(items, time.Time{})
			return
		}
	}
	s.writeBatch(w, r, items)
}

// parseBatch decodes and validates an envelope; a whole-envelope failure is
// a 400.
func parseBatch(raw []byte, readErr error) ([]*batchItem, *graphError) {
	bad := func(msg string) *graphError {
		return &graphError{status: http.StatusBadRequest, code: "BadRequest", message: msg}
	}
	if readErr != nil {
		return nil, bad(readErr.Error())
	}
	var env struct {
		Requests []batchRequest `json:"requests"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, bad("Invalid batch payload format: " + err.Error())
	}
	switch n := len(env.Requests); {
	case n == 0:
		return nil, bad("Invalid batch payload format: no requests.")
	case n > MaxBatchRequests:
		return nil, bad(fmt.Sprintf("Number of batch request steps exceeds the maximum of %d.", MaxBatchRequests))
	}
	seen := make(map[string]bool, len(env.Requests))
	items := make([]*batchItem, len(env.Requests))
	for i, in := range env.Requests {
		if in.ID == "" {
			return nil, bad(fmt.Sprintf("Request %d has no id.", i))
		}
		k := strings.ToLower(in.ID)
		if seen[k] {
			return nil, bad(fmt.Sprintf("Batch request ids must be unique; '%s' is repeated.", in.ID))
		}
		seen[k] = true
		it := &batchItem{in: in}
		switch {
		case in.Method == "":
			it.bad = bad("Request has no method.")
		case !strings.HasPrefix(in.URL, "/") || strings.HasPrefix(in.URL, "//"):
			it.bad = bad(fmt.Sprintf("Invalid request url '%s': it must be relative, without the version.", in.URL))
		case hasVersion(in.URL):
			it.bad = bad(fmt.Sprintf("Invalid request url '%s': it must not name the version.", in.URL))
		case len(in.Body) > 0 && headerValue(in.Headers, "Content-Type") == "":
			it.bad = bad("Content-Type header is required for a request with a body.")
		}
		items[i] = it
	}
	return items, nil
}

// hasVersion reports whether a relative url starts with a Graph version.
func hasVersion(u string) bool {
	first, _, _ := strings.Cut(strings.TrimPrefix(u, "/"), "/")
	return strings.EqualFold(first, "v1.0") || strings.EqualFold(first, "beta")
}

// url is the item's request as a direct call's URL.
func (it *batchItem) url() *url.URL {
	u, err := url.Parse("/v1.0" + it.in.URL)
	if err != nil {
		return &url.URL{Path: "/v1.0/invalid"}
	}
	return u
}

// headerValue looks a header up case-insensitively, as Graph does.
func headerValue(h map[string]string, key string) string {
	for k, v := range h {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

// writeBatch renders the envelope's answer, announces the deadlines its
// throttled requests set, records each request and sends the envelope.
func (s *Server) writeBatch(w http.ResponseWriter, r *http.Request, items []*batchItem) {
	out := struct {
		Responses []batchResponse `json:"responses"`
	}{Responses: make([]batchResponse, 0, len(items))}
	buf := s.buffer()
	defer s.bufs.Put(buf)
	for i := len(items) - 1; i >= 0; i-- {
		it := items[i]
		requestID := newGUID()
		buf.Reset()
		contentType, err := encodeReply(buf, it.rep, requestID, it.call.ClientRequestID)
		if err != nil {
			s.fail(fmt.Errorf("graphsim batch: %w", err))
			s.finishItems(items, time.Time{})
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h := make(map[string]string, len(it.rep.header)+2)
		for k, v := range it.rep.header {
			h[k] = strings.Join(v, ", ")
		}
		if it.rep.retryAfter != "" {
			h["Retry-After"] = it.rep.retryAfter
		}
		resp := batchResponse{ID: it.in.ID, Status: it.rep.status(), Headers: h}
		if contentType != "" {
			h["Content-Type"] = contentType
			resp.Body = bytes.Clone(buf.Bytes())
		}
		out.Responses = append(out.Responses, resp)
	}
	body, err := json.Marshal(out)
	if err != nil {
		s.fail(fmt.Errorf("graphsim batch: encode envelope: %w", err))
		s.finishItems(items, time.Time{})
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	for _, it := range items {
		if it.rep.announce {
			deadline := it.rep.until
			if deadline.IsZero() {
				deadline = time.Now().Add(it.rep.wait)
			}
			it.notBefore = deadline
			s.announce(deadline)
		}
	}
	h := w.Header()
	requestID := newGUID()
	h["Request-Id"] = []string{requestID}
	h["Client-Request-Id"] = []string{orDefault(r.Header.Get(headerClientRequestID), requestID)}
	h["Content-Type"] = []string{contentTypeJSON}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(http.StatusOK)
	_, werr := w.Write(body)
	answered := time.Now()
	if werr != nil {
		answered = time.Time{}
	}
	s.finishItems(items, answered)
	if f, ok := w.(http.Flusher); ok && werr == nil {
		f.Flush()
		now := time.Now()
		for _, it := range items {
			s.flushed(it.call, now)
		}
	}
}

// finishItems records what each request of an envelope got; a zero
// answered means the envelope was not answered.
func (s *Server) finishItems(items []*batchItem, answered time.Time) {
	for _, it := range items {
		if it.call == nil {
			continue
		}
		res := callResult{op: it.req.op, user: it.req.user, ids: it.req.ids, actions: it.req.actions}
		if !answered.IsZero() && it.rep != nil {
			res.status = it.rep.status()
			if it.rep.retryAfter != "" {
				res.retryAfter = it.rep.wait
			}
			res.answered, res.notBefore, res.throttled = answered, it.notBefore, it.rep.throttled
		}
		s.finishCall(it.call, res)
	}
}

// FailBatch makes the next n $batch envelopes fail whole with status (429,
// 503, 504 or 500, say), none of their requests judged or recorded, as a
// gateway in front of Graph might; retryAfter, if not empty, is sent as the
// envelope's Retry-After. Direct calls are not affected. n <= 0 cancels;
// ClearFaults too.
func (s *Server) FailBatch(n, status int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.batchFailN, s.faults.batchFailStatus, s.faults.batchFailRetryAfter = max(n, 0), status, retryAfter
}

// failBatch consumes one FailBatch fault, if any, and returns its answer.
func (s *Server) failBatch() *reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &s.faults
	if f.batchFailN == 0 {
		return nil
	}
	f.batchFailN--
	rep := &reply{err: unavailableError(f.batchFailStatus)}
	if f.batchFailStatus == http.StatusTooManyRequests {
		rep.err = throttledError()
	}
	if f.batchFailRetryAfter != "" {
		rep.retryAfter = f.batchFailRetryAfter
	}
	return rep
}

// writeEnvelopeError answers the whole envelope with rep (400, 401, 405),
// as a direct call's error. It records no call: none was judged.
func (s *Server) writeEnvelopeError(w http.ResponseWriter, r *http.Request, rep *reply) {
	if err := s.writeGraph(w, r, rep); err != nil {
		s.fail(fmt.Errorf("graphsim batch: %w", err))
	}
}
