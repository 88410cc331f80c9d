package graphclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/cenkalti/backoff/v4"
)

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

// verdict collects the entries of one answer that name a site.
type verdict struct {
	requested bool // the site was in the call being answered
	success   bool
	permanent *SiteError
	transient *SiteError
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
	code, reason := CodeNetworkError, reasonNetwork
	var se *sendError
	switch {
	case errors.As(err, &se) && se.invalid:
		// A $batch answer without a usable answer for this request: never
		// taken as applied, tried again.
		code, reason = CodeInvalidResponse, reasonInvalid
	case se != nil && se.timeout:
		code = CodeTimeout
	}
	e := &SiteError{Code: code, Message: err.Error()}
	if se != nil {
		e.ClientRequestID = se.clientRequestID
	}
	r.setPendingErr(keys, e)
	return &retryError{reason: reason}
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
	if e := resp.userNotVisible(); e != nil {
		// Not this call's fault but the user's age: the caller decides
		// whether to wait for the account (see CodeUserNotFound).
		for _, k := range keys {
			r.settle(k, Rejected, e)
		}
		return nil
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
		// Permanent: 400 malformed, 403 no permission or guest user, and
		// the rest of 4xx (404 is userNotVisible's). Retrying the same call cannot
		// help.
		e := resp.wholeCallError("httpStatus" + strconv.Itoa(s))
		if s == http.StatusBadRequest && len(keys) > 1 {
			// The call may be refused for one bad site: see errSplit. The
			// halves' answers will decide; this one holds only until then.
			r.setPendingErr(keys, e)
			resp.split = true
			return errSplit
		}
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

// transientCode is the code a transient status gets when Graph names none,
// and the retries metric's reason for it.
func transientCode(status int) (code, reason string) {
	switch status {
	case http.StatusTooManyRequests, 509:
		return CodeThrottled, reasonThrottled
	case http.StatusGatewayTimeout:
		return CodeGatewayTimeout, reasonUnavailable
	case http.StatusRequestTimeout:
		return CodeTimeout, reasonUnavailable
	}
	return CodeServiceUnavailable, reasonUnavailable
}

func (r *run) handleTransient(keys []string, resp *response) error {
	fallback, reason := transientCode(resp.status)
	e := resp.wholeCallError(fallback)
	if wait, ok := resp.retryAfter(r.c.now()); ok {
		// observe has already closed the app-wide gate for this wait.
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
		case st.op == Remove:
			// Remove answers (and beta followingSites 207s) list only the
			// failures.
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
