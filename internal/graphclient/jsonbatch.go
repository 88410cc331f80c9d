package graphclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// MaxBatchRequests is the most calls Graph accepts in one $batch envelope.
const MaxBatchRequests = 20

// batchItemSlack bounds what an envelope's answer adds to each inner
// answer (its id, status and headers).
const batchItemSlack = 4 << 10

// errNoInnerAnswer is a $batch answer that holds no usable answer for a
// request: the envelope was not valid JSON, or named no response with the
// request's id.
var errNoInnerAnswer = errors.New("graph's $batch answer holds no answer for this request")

// batcher combines the calls that concurrent runs are about to send into
// $batch envelopes by group commit: the first call to arrive opens an
// envelope and starts its flush, which waits the linger (or until
// MaxBatchRequests calls joined), sends the envelope and hands every call
// its own answer. Every call has already passed admission on its own (its
// own ticket against the pace, the concurrency bound and the gate, and its
// own permit), so batching changes how calls travel, not how many are
// made. Calls carrying different tokens never share an envelope: a run
// re-sending with a refreshed token after a 401 must not be sent with the
// stale one again.
type batcher struct {
	c      *Client
	linger time.Duration

	// sealAt reports whether an envelope of n calls goes out without
	// waiting for the linger to end: when it is full. Tests replace it to
	// gather exactly the calls they mean to.
	sealAt func(n int) bool
	// pace is the calls per second admission lets out (+Inf unpaced);
	// tests replace it.
	pace func() float64

	mu   sync.Mutex
	open map[string]*envelope // gathering, by token
}

func newBatcher(c *Client, linger time.Duration) *batcher {
	return &batcher{c: c, linger: linger, open: make(map[string]*envelope),
		sealAt: func(n int) bool { return n >= MaxBatchRequests }, pace: func() float64 { return c.admission.paceLimit() }}
}

// envelope is one $batch request being gathered.
type envelope struct {
	token string
	items []*batchItem // guarded by batcher.mu until sealed
	full  chan struct{}
}

// batchItem is one call waiting for its answer inside an envelope.
type batchItem struct {
	url             string // relative, without the version
	body            []byte
	clientRequestID string
	done            chan struct{} // closed once res is set

	mu   sync.Mutex
	res  batchResult
	gone bool // the caller stopped waiting; its answer is released on arrival
}

// batchResult is what a call got from its envelope: its answer, or why it
// got none.
type batchResult struct {
	resp           *response
	err            error
	timeout        bool // the envelope's request timed out
	invalid        bool // the envelope's answer held nothing usable for it
	batchRequestID string
	batchSize      int
}

// deliver hands the item its result, or releases the answer when the
// caller has gone.
func (it *batchItem) deliver(c *Client, res batchResult) {
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.gone {
		res.resp.release(c)
		return
	}
	it.res = res
	close(it.done)
}

// abandon marks the item as no longer waited for; it reports false when
// the result arrived meanwhile, which the caller then takes.
func (it *batchItem) abandon() bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	select {
	case <-it.done:
		return false
	default:
	}
	it.gone = true
	return true
}

// callTimeout is how long a call may take from the moment it is sent for,
// for the caller's permit: a request, and the linger of its envelope.
func (c *Client) callTimeout() time.Duration {
	if c.batcher == nil {
		return c.requestTimeout
	}
	return c.requestTimeout + c.batcher.linger
}

// dispatch sends the run's call for keys: through the batcher when JSON
// batching is on (v1 calls only), directly otherwise.
func (r *run) dispatch(ctx context.Context, keys []string, token string, body []byte) (*response, error) {
	if r.c.batcher == nil || r.op == FollowingSites {
		return r.send(ctx, keys, token, body)
	}
	return r.sendBatched(ctx, keys, token, body)
}

// sendBatched is send through the batcher: the call joins an envelope and
// waits for its own answer (or its ctx), which comes back as the same
// *response a direct call would have got, headers (Retry-After, RateLimit)
// and status its own. A caller whose ctx ends stops waiting; the envelope
// goes out for the others.
func (r *run) sendBatched(ctx context.Context, keys []string, token string, body []byte) (*response, error) {
	c := r.c
	info := r.newCall(keys)
	it := &batchItem{
		url:             "/users/" + url.PathEscape(r.userID) + "/followedSites/" + string(r.op),
		body:            body,
		clientRequestID: info.clientRequestID,
		done:            make(chan struct{}),
	}
	c.metrics.callStarted(r.op, len(keys))
	start := time.Now()
	c.batcher.join(ctx, token, it)
	var res batchResult
	select {
	case <-it.done:
		res = it.res
	case <-ctx.Done():
		if it.abandon() {
			res = batchResult{err: context.Cause(ctx)}
		} else {
			res = it.res
		}
	}
	info.elapsed = time.Since(start)
	info.batchRequestID, info.batchSize = res.batchRequestID, res.batchSize
	switch {
	case res.resp != nil:
		info.status = strconv.Itoa(res.resp.status)
	case ctx.Err() != nil:
		info.status = "canceled"
	default:
		info.status = "error"
	}
	c.metrics.callDone(r.op, info.status, info.elapsed)
	if res.resp == nil {
		info.err = fmt.Errorf("graphclient: %s for user %q: %w", r.op, r.userID, res.err)
		return nil, &sendError{call: info, timeout: res.timeout, invalid: res.invalid}
	}
	res.resp.call = info
	if res.resp.clientRequestID == "" {
		res.resp.clientRequestID = info.clientRequestID
	}
	return res.resp, nil
}

// join adds it to the open envelope for token, opening one (and starting
// its flush) if there is none. The flush's context keeps ctx's values but
// not its cancellation: one caller giving up must not fail the others.
func (b *batcher) join(ctx context.Context, token string, it *batchItem) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.open[token]
	if e == nil {
		e = &envelope{token: token, full: make(chan struct{})}
		b.open[token] = e
		// Ends after the linger and one request bounded by RequestTimeout.
		go b.flush(context.WithoutCancel(ctx), e)
	}
	e.items = append(e.items, it)
	if b.sealAt(len(e.items)) || len(e.items) >= MaxBatchRequests {
		delete(b.open, token)
		close(e.full)
	}
}

// lingerNow is how long an envelope opened now waits for calls to join:
// the linger, unless the pacer spaces calls so far apart that fewer than
// one more is due within it (the slow start, a throttled app). Waiting
// would then gather nobody and only delay the call; an envelope still
// carries the calls that joined while it was being opened.
func (b *batcher) lingerNow() time.Duration {
	if b.pace()*b.linger.Seconds() < 1 {
		return 0
	}
	return b.linger
}

// flush waits for the envelope to fill or its linger to pass, seals it and
// sends it.
func (b *batcher) flush(ctx context.Context, e *envelope) {
	t := time.NewTimer(b.lingerNow())
	select {
	case <-t.C:
	case <-e.full:
		t.Stop()
	}
	b.mu.Lock()
	if b.open[e.token] == e {
		delete(b.open, e.token)
	}
	items := e.items
	b.mu.Unlock()
	// Each call passed the throttle gate before it joined; one met since
	// (by another call) holds the envelope back as it would hold them.
	if _, err := b.c.admission.waitGateFor(ctx, b.c.maxRetryAfter); err != nil {
		// Not reached: the gate never closes for longer than MaxRetryAfter.
		for _, it := range items {
			it.deliver(b.c, batchResult{err: fmt.Errorf("graphclient: $batch held back: %w", err)})
		}
		return
	}
	b.send(ctx, e.token, items)
}

// send makes the HTTP request for items and delivers each its result. A
// single call goes out directly, as without batching.
func (b *batcher) send(ctx context.Context, token string, items []*batchItem) {
	c := b.c
	if len(items) == 1 {
		it := items[0]
		c.metrics.httpRequest(httpKindDirect)
		resp, timeout, err := c.roundTrip(ctx, http.MethodPost, c.baseURL+"/v1.0"+it.url, token, it.clientRequestID, it.body, c.maxAnswer)
		it.deliver(c, batchResult{resp: resp, err: err, timeout: timeout})
		return
	}
	body, err := envelopeBody(items)
	if err != nil {
		// Unreachable: the bodies are JSON this package wrote.
		for _, it := range items {
			it.deliver(c, batchResult{err: fmt.Errorf("encode $batch: %w", err), invalid: true})
		}
		return
	}
	batchID := uuid.NewString()
	c.metrics.httpRequest(httpKindBatch)
	c.metrics.envelope(len(items))
	limit := int(min(int64(len(items))*int64(c.maxAnswer+batchItemSlack), c.answerMemory-1))
	resp, timeout, err := c.roundTrip(ctx, http.MethodPost, c.baseURL+"/v1.0/$batch", token, batchID, body, limit)
	base := batchResult{batchRequestID: batchID, batchSize: len(items)}
	if err != nil {
		for _, it := range items {
			res := base
			res.err, res.timeout = err, timeout
			it.deliver(c, res)
		}
		return
	}
	share := &answerShare{buf: resp.buf, held: resp.held}
	resp.buf, resp.held = nil, 0
	share.refs.Store(int64(len(items)))
	if resp.tooLong || resp.status < 200 || resp.status >= 300 {
		// The envelope failed whole: every call gets what a direct call
		// would have (a throttle, an outage, a 401, a 400, an answer too
		// long), so the usual retry, token refresh and split apply.
		for _, it := range items {
			own := *resp
			own.shared = share
			own.clientRequestID = it.clientRequestID
			res := base
			res.resp = &own
			it.deliver(c, res)
		}
		return
	}
	answers, perr := innerAnswers(resp, len(items))
	for i, it := range items {
		res := base
		inner := answers[i]
		if inner == nil {
			share.release(c)
			res.invalid = true
			res.err = errNoInnerAnswer
			if perr != nil {
				res.err = fmt.Errorf("%w: %w", errNoInnerAnswer, perr)
			}
			it.deliver(c, res)
			continue
		}
		if throttleStatus(inner.status) {
			// As for a direct throttle's status line: close the gate at once.
			c.admission.pauseEarly(c.now(), inner.header)
		}
		inner.shared = share
		if inner.clientRequestID == "" {
			inner.clientRequestID = it.clientRequestID
		}
		res.resp = inner
		it.deliver(c, res)
	}
}

// answerShare holds a $batch answer's buffer and memory until every call
// it answered has released its part.
type answerShare struct {
	buf  *[]byte
	held int64
	refs atomic.Int64
}

func (s *answerShare) release(c *Client) {
	if s.refs.Add(-1) != 0 {
		return
	}
	if s.buf != nil {
		*s.buf = (*s.buf)[:0]
		c.bufs.Put(s.buf)
	}
	if s.held > 0 {
		c.answers.Release(s.held)
	}
}

// envelopeRequest is one request of a $batch envelope.
type envelopeRequest struct {
	ID      string            `json:"id"`
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
}

// envelopeBody is {"requests":[...]} for items, with ids "1".."n": unique
// in the envelope, whatever Graph compares them with.
func envelopeBody(items []*batchItem) ([]byte, error) {
	v := struct {
		Requests []envelopeRequest `json:"requests"`
	}{Requests: make([]envelopeRequest, len(items))}
	for i, it := range items {
		v.Requests[i] = envelopeRequest{
			ID:     strconv.Itoa(i + 1),
			Method: http.MethodPost,
			URL:    it.url,
			Headers: map[string]string{
				"Content-Type":      "application/json",
				"Client-Request-Id": it.clientRequestID,
			},
			Body: it.body,
		}
	}
	return json.Marshal(v)
}

// innerAnswers reads a 2xx envelope's answers, in any order, into one
// response per item by id ("1".."n"); an item Graph did not answer (or an
// envelope that is not valid JSON) gets nil, and the error says why when
// the envelope was unreadable. Repeated or unknown ids are ignored. Header
// names are matched case-insensitively; an inner answer without request
// ids takes the envelope's request-id.
func innerAnswers(env *response, n int) ([]*response, error) {
	out := make([]*response, n)
	var v struct {
		Responses []struct {
			ID      string            `json:"id"`
			Status  int               `json:"status"`
			Headers map[string]string `json:"headers"`
			Body    json.RawMessage   `json:"body"`
		} `json:"responses"`
	}
	if err := json.Unmarshal(env.raw, &v); err != nil {
		return out, fmt.Errorf("decode $batch answer: %w", err)
	}
	for _, a := range v.Responses {
		i, err := strconv.Atoi(a.ID)
		if err != nil || i < 1 || i > n || out[i-1] != nil || a.Status < 100 || a.Status > 999 {
			continue
		}
		h := make(http.Header, len(a.Headers))
		for k, val := range a.Headers {
			h[http.CanonicalHeaderKey(k)] = []string{val}
		}
		raw := []byte(a.Body)
		if string(raw) == "null" {
			raw = nil
		}
		out[i-1] = &response{
			status:          a.Status,
			header:          h,
			raw:             raw,
			body:            view(raw),
			requestID:       orDefault(h.Get("Request-Id"), env.requestID),
			clientRequestID: h.Get("Client-Request-Id"),
		}
	}
	return out, nil
}
