package graphclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"
	"unsafe"

	"github.com/google/uuid"

	"github.com/sitefollow/sitefollow/internal/event"
)

// call describes one Graph call, for its log line: a direct HTTP request,
// or one request of a JSON batch.
type call struct {
	attempt         int
	sites           int
	clientRequestID string
	status          string
	elapsed         time.Duration
	err             error
	// batchRequestID and batchSize name the $batch envelope that carried
	// the call (its client-request-id and how many requests it held); empty
	// for a direct call.
	batchRequestID string
	batchSize      int
}

// sendError is a request that got no HTTP status, or (invalid) a $batch
// answer that held no usable answer for it.
type sendError struct {
	call
	timeout bool
	invalid bool
}

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

// newCall counts an attempt for keys and describes the call about to go
// out.
func (r *run) newCall(keys []string) call {
	for _, k := range keys {
		for _, i := range r.sites[k].indexes {
			r.results[i].Attempts++
		}
	}
	return call{
		attempt:         r.results[r.sites[keys[0]].indexes[0]].Attempts,
		sites:           len(keys),
		clientRequestID: uuid.NewString(),
	}
}

// send performs one HTTP call and updates the metrics; the caller logs it
// with logCall once the answer is interpreted.
func (r *run) send(ctx context.Context, keys []string, token string, body []byte) (*response, error) {
	c := r.c
	info := r.newCall(keys)
	method, target := r.target()

	c.metrics.callStarted(r.op, len(keys))
	c.metrics.httpRequest(httpKindDirect)
	start := time.Now()
	out, timeout, err := c.roundTrip(ctx, method, target, token, info.clientRequestID, body, c.maxAnswer)
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
		return nil, &sendError{call: info, timeout: timeout}
	}
	out.call = info
	return out, nil
}

// roundTrip sends one HTTP request to Graph, bounded by RequestTimeout,
// and reads its answer of at most limit bytes (see readBody). On a throttle
// status line it closes the gate before the body is read. With no answer it
// says whether the request timed out (rather than ctx ending or the
// network failing). A nil body sends none, and no Content-Type (a GET).
func (c *Client) roundTrip(ctx context.Context, method, target, token, clientRequestID string, body []byte, limit int) (*response, bool, error) {
	rctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(rctx, method, target, reader)
	if err != nil {
		return nil, false, fmt.Errorf("build request: %w", err)
	}
	// The keys in canonical form, as Header.Set would write them, in one
	// map of the right size.
	req.Header = http.Header{
		"Authorization":            {"Bearer " + token},
		"Accept":                   {"application/json"},
		"User-Agent":               {c.userAgent},
		"Client-Request-Id":        {clientRequestID},
		"Return-Client-Request-Id": {"true"},
	}
	if body != nil {
		req.Header["Content-Type"] = []string{"application/json"}
	}
	timedOut := func(err error) bool {
		var ne net.Error
		return ctx.Err() == nil && (errors.Is(rctx.Err(), context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout())
	}
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return nil, timedOut(err), err
	}
	if throttleStatus(resp.StatusCode) {
		// Close the gate on the status line, before the body is read
		// (which may wait for answer memory): every moment counts while
		// other calls could still go out into the pause.
		c.admission.pauseEarly(c.now(), resp.Header)
	}
	out := &response{
		status:          resp.StatusCode,
		header:          resp.Header,
		requestID:       resp.Header.Get("Request-Id"),
		clientRequestID: orDefault(resp.Header.Get("Client-Request-Id"), clientRequestID),
	}
	if err := c.readBody(rctx, resp, out, limit); err != nil {
		out.release(c)
		return nil, timedOut(err), fmt.Errorf("read %d answer: %w", resp.StatusCode, err)
	}
	return out, false, nil
}

// readBody reads and closes an answer's body into a pooled buffer, which
// the caller hands back with response.release. The body is read in place,
// into a buffer sized from Content-Length when Graph sends one, so it is
// never copied whole; a body longer than limit (MaxResponseBytes for a
// direct call) is not read at
// all beyond the bound (out.tooLong) and its connection is dropped. Before
// reading, the answer's share of MaxResponseMemory is taken, so concurrent
// calls never hold more than that together. Reading a body to its end lets
// the connection be reused.
func (c *Client) readBody(ctx context.Context, resp *http.Response, out *response, limit int) error {
	defer resp.Body.Close()
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
	if p.shared != nil {
		p.shared.release(c)
		p.shared = nil
	}
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
		Str("status", info.status).Float64("durationMs", float64(info.elapsed.Microseconds())/1000).Int("attempt", info.attempt).
		Str("client_request_id", info.clientRequestID)
	if info.batchSize > 0 {
		ev = ev.Str("batch_request_id", info.batchRequestID).Int("batch_size", info.batchSize)
	}
	if resp != nil {
		ev = ev.Str("request_id", resp.requestID)
		if throttleStatus(resp.status) {
			// What the throttle asked for and the pace it leaves: the two
			// things an operator reading a 429 wants to know.
			if wait, ok := resp.retryAfter(r.c.now()); ok {
				ev = ev.Str("retryAfter", wait.Round(time.Millisecond).String())
			} else {
				ev = ev.Str("retryAfter", "none")
			}
			if pace := r.c.admission.pacer.limit(); !math.IsInf(pace, 0) {
				ev = ev.Float64("paceCallsPerSecond", math.Round(pace*100)/100)
			}
		}
		if resp.tooLong {
			ev = ev.Bool("answer_too_long", true)
		}
		if resp.split {
			ev = ev.Bool("split", true)
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
