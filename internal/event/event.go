// Package event defines the follow/unfollow request and dead-letter formats
// and is the one place that decodes and validates request events. It imports
// neither NATS nor HTTP, so producers' contract lives apart from transport.
package event

import (
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// Action is what a request asks Graph to do with its sites.
type Action string

// The two actions a request may carry.
const (
	Follow   Action = "follow"
	Unfollow Action = "unfollow"
)

// DefaultMaxSites is the default cap on siteIds per event.
const DefaultMaxSites = 100

// Request is one follow/unfollow request: one user, one action, one or more
// sites, named by id, by URL, or both. Unknown JSON fields are ignored for forward compatibility.
type Request struct {
	UserID  string   `json:"userId"`
	Action  Action   `json:"action"`
	SiteIDs []string `json:"siteIds,omitempty"`
	// SiteURLs names sites by URL, https://host[/server-relative path];
	// the consumer resolves them to ids before batching.
	SiteURLs   []string `json:"siteUrls,omitempty"`
	ID         string   `json:"id,omitempty"`
	OccurredAt string   `json:"occurredAt,omitempty"`
	Source     string   `json:"source,omitempty"`
}

// ErrInvalid classifies every validation failure of an event.
var ErrInvalid = errors.New("invalid event")

// InvalidError says which field of an event is wrong and why.
type InvalidError struct {
	Field  string
	Reason string
}

// Error implements error.
func (e *InvalidError) Error() string {
	if e.Field == "" {
		return "invalid event: " + e.Reason
	}
	return "invalid event: " + e.Field + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalid) hold for every InvalidError.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// SiteKey is the canonical form of a site id for comparison: Graph answers
// with upper-case GUIDs in places, so ids compare case-insensitively.
func SiteKey(id string) string { return strings.ToLower(id) }

// UserKey is the canonical form of a user id for comparison (GUIDs and UPNs
// are both case-insensitive).
func UserKey(id string) string { return strings.ToLower(id) }

// Dead-letter codes the consumer assigns itself; every other code is Graph's.
const (
	CodeInvalidEvent     = "invalidEvent"
	CodeRetriesExhausted = "retriesExhausted"
	// CodeUserNotFound: Graph kept answering as if the user did not exist
	// (a whole-call 404, resourceBeingProvisioned, "User's mysite not
	// found") until the request's new-account window
	// (SITEFOLLOW_NEW_USER_WINDOW) ended.
	CodeUserNotFound = "userNotFound"
)

// DeadLetter is one failed (user, action, site), or one invalid event, as
// published to the dead-letter subject. It carries enough to fix and replay.
type DeadLetter struct {
	UserID string `json:"userId"`
	Action Action `json:"action,omitempty"`
	SiteID string `json:"siteId,omitempty"`
	// SiteURL is the site URL the dead letter is about, when the request
	// named the site by URL and it could not be resolved (siteNotFound).
	SiteURL  string    `json:"siteUrl,omitempty"`
	Error    Failure   `json:"error"`
	Attempts int       `json:"attempts"`
	DeadAt   time.Time `json:"deadAt"`
	Origin   Origin    `json:"origin"`
	// Event is the original event when it was a JSON object.
	Event json.RawMessage `json:"event,omitempty"`
	// RawPayload is the original payload (base64 in JSON) when it was not,
	// or when it was too large to keep whole (then only its beginning).
	RawPayload []byte `json:"rawPayload,omitempty"`
	// Narrowed says Event is the request narrowed to SiteID, not the whole
	// event; Origin locates the whole event.
	Narrowed bool `json:"narrowed,omitempty"`
	// Truncated lists the fields that were cut to keep the dead letter
	// storable, with each one's original length in bytes.
	Truncated map[string]int `json:"truncated,omitempty"`
	// Replays is how many times the request was replayed from the
	// dead-letter stream before failing again (its Sitefollow-Replay-Count
	// header); 0 for a request that never was.
	Replays int `json:"replays,omitempty"`
}

// Failure describes why a site or event was dead-lettered.
type Failure struct {
	Code            string `json:"code"`
	Message         string `json:"message"`
	HTTPStatus      int    `json:"httpStatus"`
	RequestID       string `json:"requestId,omitempty"`
	ClientRequestID string `json:"clientRequestId,omitempty"`
}

// Origin locates the request message a dead letter came from.
type Origin struct {
	Stream   string `json:"stream"`
	Sequence uint64 `json:"sequence"`
	Subject  string `json:"subject"`
	// StreamCreated is when the origin stream was created: with Stream and
	// Sequence it identifies the request message even after the stream is
	// re-created and sequences restart at 1.
	StreamCreated time.Time `json:"streamCreated,omitzero"`
}
