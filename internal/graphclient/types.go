package graphclient

import (
	"strconv"
	"time"
)

// Operation is the followedSites action a call performs.
type Operation string

// The two followedSites actions.
const (
	Add    Operation = "add"
	Remove Operation = "remove"
)

// Outcome is the verdict Apply reaches for one site.
type Outcome int

// Outcomes of Apply.
const (
	// Applied means Graph confirmed the site: a success entry in an add
	// answer, or a remove answered 204 or a 207 that does not list the site.
	Applied Outcome = iota + 1
	// Rejected means Graph refused the site permanently: the caller should
	// dead-letter it rather than retry.
	Rejected
	// Unresolved means the site's fate is still open after the in-process
	// retries (or the context ended): the caller should redeliver it later.
	Unresolved
)

// String returns the outcome's lower-case name, for logs.
func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Rejected:
		return "rejected"
	case Unresolved:
		return "unresolved"
	default:
		return "outcome(" + strconv.Itoa(int(o)) + ")"
	}
}

// Codes set on SiteError for verdicts Graph did not name with its own
// error.code. When a Graph response carries an error.code, that code is used
// instead.
const (
	// CodeThrottled means 429 or 509, or the app-wide throttle gate asked for a
	// wait longer than Config.MaxRetryAfter.
	CodeThrottled = "throttled"
	// CodeServiceUnavailable means 503, or another 5xx without a Graph code.
	CodeServiceUnavailable = "serviceUnavailable"
	// CodeGatewayTimeout means 504 without a Graph code.
	CodeGatewayTimeout = "gatewayTimeout"
	// CodeNetworkError means the request failed before an HTTP status arrived.
	CodeNetworkError = "networkError"
	// CodeTimeout means the request exceeded Config.RequestTimeout.
	CodeTimeout = "timeout"
	// CodeCanceled means Apply's context ended before the site was settled.
	CodeCanceled = "canceled"
	// CodeUnauthenticated means Graph answered 401 even with a freshly issued token.
	CodeUnauthenticated = "unauthenticated"
	// CodeTokenUnavailable means the credential could not produce a token.
	CodeTokenUnavailable = "tokenUnavailable"
	// CodeUnconfirmed means an add answer never mentioned the site, even after
	// re-sending it; it is not assumed followed.
	CodeUnconfirmed = "unconfirmed"
	// CodeInvalidResponse means a 2xx answer whose body could not be decoded.
	CodeInvalidResponse = "invalidResponse"
	// CodeInvalidOperation means Apply was called with an Operation other than
	// Add or Remove.
	CodeInvalidOperation = "invalidOperation"
	// CodeInvalidUserID means the user id is empty, "." or "..", which cannot
	// name a user and must not become a path segment.
	CodeInvalidUserID = "invalidUserId"
	// CodeNotPermitted means the caller's permit refused a call (see
	// WithPermit): nothing was sent, and the caller decides what follows.
	CodeNotPermitted = "notPermitted"
)

// SiteError describes why a site is Rejected or Unresolved.
type SiteError struct {
	// Code is Graph's error.code, or one of the Code* constants, or
	// "httpStatus<N>" for a permanent whole-call status without a code.
	Code    string
	Message string
	// HTTPStatus is the status of the response that carried the verdict:
	// 207 for per-site entries, the whole-call status otherwise, 0 when no
	// response arrived (network error, cancellation, throttle gate).
	HTTPStatus      int
	RequestID       string
	ClientRequestID string
	// RetryAfter is how long Graph asked the app to pause, when the verdict
	// came from throttling; a caller can use it as its redelivery delay,
	// capped by its own longest delay. It is at most 24 hours whatever
	// Graph sent.
	RetryAfter time.Duration
}

// Error returns the code and message.
func (e *SiteError) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// SiteResult is Apply's verdict for one requested site.
type SiteResult struct {
	// SiteID is the id as the caller passed it.
	SiteID  string
	Outcome Outcome
	// Err is nil when Outcome is Applied.
	Err *SiteError
	// Attempts is how many Graph calls included this site.
	Attempts int
}
