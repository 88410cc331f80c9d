package graphclient

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

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

// transientStatus reports whether a whole-call status is worth retrying:
// throttling (429, 509), timeouts (408) and server errors.
func transientStatus(s int) bool {
	return s == http.StatusTooManyRequests || s == 509 || s == http.StatusRequestTimeout || s >= 500
}

// response is what is kept of one HTTP answer.
type response struct {
	call
	buf             *[]byte      // pooled; backs raw and body; see view
	held            int64        // units of Client.answers held until release
	shared          *answerShare // the $batch envelope's answer this one is part of
	raw             []byte       // the answer's body, read in place
	tooLong         bool         // the body was longer than MaxResponseBytes and not read
	split           bool         // a whole-call 400 made the call split in halves
	status          int
	header          http.Header
	body            string
	requestID       string
	clientRequestID string
	unrequested     []string
}

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
	g := p.graphError()
	if g == nil {
		return e
	}
	if g.Code != "" {
		e.Code = g.Code
	}
	if g.Message != "" {
		e.Message = g.Message
	}
	if in := g.InnerError; in != nil {
		if e.RequestID == "" {
			e.RequestID = in.RequestID
		}
		if in.ClientRequestID != "" {
			e.ClientRequestID = in.ClientRequestID
		}
	}
	return e
}

// graphError decodes the answer's whole-call error object, nil when the
// body holds none.
func (p *response) graphError() *graphError {
	var v struct {
		Error *graphError `json:"error"`
	}
	// Unmarshal copies the strings it returns, so reading p.raw in place
	// keeps nothing of the buffer.
	if json.Unmarshal(p.raw, &v) != nil {
		return nil
	}
	return v.Error
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

// maxParsedRetryAfter bounds every parsed Retry-After and RateLimit-Reset,
// whatever its form: a value from outside must not turn into a pause (or a
// redelivery delay) of years. It is the longest SITEFOLLOW_NAK_MAX_DELAY
// allowed; the gate and the redelivery delay apply their own, shorter caps.
const maxParsedRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After (or RateLimit-Reset) value: delay
// seconds, possibly fractional ("2.128"), or an HTTP date. Negative or
// unparsable values are ignored; a date in the past means no wait. The
// result is at most maxParsedRetryAfter.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs < 0 || math.IsNaN(secs) || math.IsInf(secs, 0) {
			return 0, false
		}
		// Round up so a fractional value never shortens the wait.
		return time.Duration(math.Ceil(min(secs, maxParsedRetryAfter.Seconds()) * float64(time.Second))), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	// HTTP dates have whole-second precision; the date itself is the
	// earliest moment Graph accepts, so wait for it in full.
	return min(max(t.Sub(now), 0), maxParsedRetryAfter), true
}
