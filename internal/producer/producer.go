// Package producer builds follow/unfollow requests the way producers should
// and publishes them through JetStream: the JSON built with encoding/json,
// checked by the consumer's own decoder and by the published schema, sent
// to sitefollow.requests.<source> with a Nats-Msg-Id, and confirmed by a
// PubAck. consumer send uses it; so can any Go producer in this repository.
package producer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/schemas"
)

// SubjectPrefix is where producers publish: the source is the last token.
const SubjectPrefix = "sitefollow.requests."

// maxSourceLen mirrors the schema's maxLength for source.
const maxSourceLen = 64

// Encoder turns requests into validated JSON bodies.
type Encoder struct {
	decoder event.Decoder
	schema  *jsonschema.Schema
}

// NewEncoder compiles the embedded request schema (with format assertions,
// so occurredAt's date-time is checked, as the schema tests check it).
func NewEncoder() (*Encoder, error) {
	raw, err := schemas.Read(schemas.FollowRequestFile)
	if err != nil {
		return nil, fmt.Errorf("new encoder: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("new encoder: parse schema %s: %w", schemas.FollowRequestFile, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(schemas.FollowRequestFile, doc); err != nil {
		return nil, fmt.Errorf("new encoder: add schema %s: %w", schemas.FollowRequestFile, err)
	}
	sch, err := c.Compile(schemas.FollowRequestFile)
	if err != nil {
		return nil, fmt.Errorf("new encoder: compile schema %s: %w", schemas.FollowRequestFile, err)
	}
	return &Encoder{schema: sch}, nil
}

// Encode returns req as producers publish it. The body is what the
// consumer's decoder makes of req, encoded again, so repeated sites appear
// once. An invalid request gives an error that errors.Is event.ErrInvalid
// and names the field; a body the decoder accepts but the schema refuses
// (they are meant to agree) says so.
func (e *Encoder) Encode(req event.Request) ([]byte, error) {
	first, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	decoded, err := e.decoder.Decode(first)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	body, err := json.Marshal(decoded)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	if err := e.schema.Validate(doc); err != nil {
		return nil, fmt.Errorf("encode request: %w: does not match %s: %w", event.ErrInvalid, schemas.FollowRequestFile, err)
	}
	return body, nil
}

// ErrSource classifies a source that cannot be a subject token.
var ErrSource = errors.New("invalid source")

// Subject is the subject a producer called source publishes to. source
// must be one subject token of ASCII letters, digits, "-" and "_", at most
// 64 characters: anything else ("." splits tokens, "*" and ">" are
// wildcards, whitespace ends a subject) would land elsewhere or nowhere.
func Subject(source string) (string, error) {
	if source == "" {
		return "", fmt.Errorf("%w: must not be empty", ErrSource)
	}
	if len(source) > maxSourceLen {
		return "", fmt.Errorf("%w: longer than %d characters", ErrSource, maxSourceLen)
	}
	for i := 0; i < len(source); i++ {
		c := source[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return "", fmt.Errorf("%w: %s: only letters, digits, - and _ make one subject token, got %s at byte %d",
				ErrSource, strconv.QuoteToASCII(source), strconv.QuoteToASCII(string(c)), i)
		}
	}
	return SubjectPrefix + source, nil
}

// MsgID is the Nats-Msg-Id derived from a body: the same request always
// gets the same id, so the request stream drops a repeat that arrives
// within its duplicate window (a retry after a lost PubAck, or the same
// command run twice).
func MsgID(body []byte) string {
	sum := sha256.Sum256(body)
	return "sha256-" + hex.EncodeToString(sum[:])
}

// ErrNoStream means no stream answered the publish: nothing captures the
// subject, usually because the streams have not been created yet.
var ErrNoStream = errors.New("no stream acknowledged the publish")

// Publisher is the part of jetstream.JetStream that Publish needs.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Publish publishes body to subject with msgID as its Nats-Msg-Id and
// waits for the PubAck; ack.Duplicate says the stream already held it.
// With no stream capturing subject the error is ErrNoStream.
func Publish(ctx context.Context, js Publisher, subject string, body []byte, msgID string) (*jetstream.PubAck, error) {
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: body}, jetstream.WithMsgID(msgID))
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("publish to %s: %w", subject, ErrNoStream)
	}
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", subject, err)
	}
	return ack, nil
}
