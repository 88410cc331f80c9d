package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/sitefollow/sitefollow/internal/jsonscan"
	"time"
)

// EncodeDeadLetter renders d as JSON in the schemas/dead-letter.v1.schema.json
// format. It refuses a dead letter that a reader of that format would refuse
// (no error code, no origin stream, a negative count, an event that is not a
// JSON object, both event and rawPayload), with an *InvalidError.
func EncodeDeadLetter(d DeadLetter) ([]byte, error) {
	if err := checkDeadLetter(d); err != nil {
		return nil, fmt.Errorf("encode dead letter: %w", err)
	}
	data, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode dead letter: %w", err)
	}
	return data, nil
}

// DecodeDeadLetter parses a dead letter written by EncodeDeadLetter, for
// tools that inspect or replay the dead-letter stream. Missing required
// fields and the problems EncodeDeadLetter refuses are *InvalidError. Unlike
// Decode it relies on encoding/json, so it is lenient about the case of keys
// and about null in optional fields, which EncodeDeadLetter never writes.
func DecodeDeadLetter(data []byte) (DeadLetter, error) {
	d, err := decodeDeadLetter(data)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("decode dead letter: %w", err)
	}
	return d, nil
}

// deadLetterWire mirrors DeadLetter with pointers where the schema requires
// a field, to tell absent from zero.
type deadLetterWire struct {
	UserID     *string         `json:"userId"`
	Action     Action          `json:"action"`
	SiteID     string          `json:"siteId"`
	SiteURL    string          `json:"siteUrl"`
	Error      *failureWire    `json:"error"`
	Attempts   *int            `json:"attempts"`
	DeadAt     *time.Time      `json:"deadAt"`
	Origin     *originWire     `json:"origin"`
	Event      json.RawMessage `json:"event"`
	RawPayload []byte          `json:"rawPayload"`
	Narrowed   bool            `json:"narrowed"`
	Truncated  map[string]int  `json:"truncated"`
	Replays    int             `json:"replays"`
}

type failureWire struct {
	Code            string  `json:"code"`
	Message         *string `json:"message"`
	HTTPStatus      *int    `json:"httpStatus"`
	RequestID       string  `json:"requestId"`
	ClientRequestID string  `json:"clientRequestId"`
}

type originWire struct {
	Stream   string    `json:"stream"`
	Sequence *uint64   `json:"sequence"`
	Subject  *string   `json:"subject"`
	Created  time.Time `json:"streamCreated"`
}

func decodeDeadLetter(data []byte) (DeadLetter, error) {
	if err := scanObject(data, nil); err != nil {
		return DeadLetter{}, err
	}
	var w deadLetterWire
	if err := json.Unmarshal(data, &w); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return DeadLetter{}, &InvalidError{Field: typeErr.Field, Reason: "must not be a JSON " + typeErr.Value}
		}
		var timeErr *time.ParseError
		if errors.As(err, &timeErr) {
			return DeadLetter{}, &InvalidError{Field: "deadAt", Reason: "must be an RFC 3339 date-time"}
		}
		return DeadLetter{}, &InvalidError{Reason: err.Error()}
	}
	missing := func(field string) error { return &InvalidError{Field: field, Reason: "is required"} }
	switch {
	case w.UserID == nil:
		return DeadLetter{}, missing("userId")
	case w.Error == nil:
		return DeadLetter{}, missing("error")
	case w.Error.Message == nil:
		return DeadLetter{}, missing("error.message")
	case w.Error.HTTPStatus == nil:
		return DeadLetter{}, missing("error.httpStatus")
	case w.Attempts == nil:
		return DeadLetter{}, missing("attempts")
	case w.DeadAt == nil:
		return DeadLetter{}, missing("deadAt")
	case w.Origin == nil:
		return DeadLetter{}, missing("origin")
	case w.Origin.Sequence == nil:
		return DeadLetter{}, missing("origin.sequence")
	case w.Origin.Subject == nil:
		return DeadLetter{}, missing("origin.subject")
	}
	d := DeadLetter{
		UserID:  *w.UserID,
		Action:  w.Action,
		SiteID:  w.SiteID,
		SiteURL: w.SiteURL,
		Error: Failure{
			Code:            w.Error.Code,
			Message:         *w.Error.Message,
			HTTPStatus:      *w.Error.HTTPStatus,
			RequestID:       w.Error.RequestID,
			ClientRequestID: w.Error.ClientRequestID,
		},
		Attempts: *w.Attempts,
		DeadAt:   *w.DeadAt,
		Origin: Origin{
			Stream:        w.Origin.Stream,
			Sequence:      *w.Origin.Sequence,
			Subject:       *w.Origin.Subject,
			StreamCreated: w.Origin.Created,
		},
		Event:      w.Event,
		RawPayload: w.RawPayload,
		Narrowed:   w.Narrowed,
		Truncated:  w.Truncated,
		Replays:    w.Replays,
	}
	if err := checkDeadLetter(d); err != nil {
		return DeadLetter{}, err
	}
	return d, nil
}

// checkDeadLetter holds the rules of the dead-letter schema that the Go
// types do not already enforce.
func checkDeadLetter(d DeadLetter) error {
	switch {
	case d.Error.Code == "":
		return &InvalidError{Field: "error.code", Reason: "is required"}
	case d.Error.HTTPStatus < 0:
		return &InvalidError{Field: "error.httpStatus", Reason: "must not be negative"}
	case d.Attempts < 0:
		return &InvalidError{Field: "attempts", Reason: "must not be negative"}
	case d.Replays < 0:
		return &InvalidError{Field: "replays", Reason: "must not be negative"}
	case d.Origin.Stream == "":
		return &InvalidError{Field: "origin.stream", Reason: "is required"}
	case d.Event != nil && d.RawPayload != nil:
		return &InvalidError{Field: "event", Reason: "must not be set together with rawPayload"}
	}
	if d.Event != nil {
		if obj := trimSpace(d.Event); len(obj) == 0 || obj[0] != '{' || !json.Valid(obj) {
			return &InvalidError{Field: "event", Reason: "must be a JSON object"}
		}
	}
	return nil
}

// trimSpace trims JSON whitespace, which is narrower than bytes.TrimSpace's.
func trimSpace(data []byte) []byte {
	i := jsonscan.Space(data, 0)
	j := len(data)
	for j > i {
		switch data[j-1] {
		case ' ', '\t', '\n', '\r':
			j--
			continue
		}
		break
	}
	return data[i:j]
}
