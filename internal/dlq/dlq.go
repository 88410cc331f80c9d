// Package dlq publishes dead letters: one message per failed (user, action,
// site), or per invalid event, on <prefix>.<error code>. A publish counts only
// once JetStream has stored it (PubAck), so the caller may then acknowledge
// the original request and nothing is lost.
package dlq

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/event"
)

// Header names set on every dead letter so operators can filter without
// decoding bodies.
const (
	HeaderCode   = "Sitefollow-Error-Code"
	HeaderUser   = "Sitefollow-User-Id"
	HeaderAction = "Sitefollow-Action"
	HeaderSite   = "Sitefollow-Site-Id"
)

// Publisher publishes dead letters to JetStream.
type Publisher struct {
	js     jetstream.JetStream
	prefix string
}

// NewPublisher returns a Publisher for subjects <prefix>.<code>.
func NewPublisher(js jetstream.JetStream, prefix string) *Publisher {
	return &Publisher{js: js, prefix: prefix}
}

// Subject returns the subject a dead letter with code goes to. Graph codes
// are camelCase words, but a code is never trusted to be a valid subject
// token, so anything outside [A-Za-z0-9_-] becomes '_'.
func Subject(prefix, code string) string {
	return prefix + "." + token(code)
}

func token(code string) string {
	if code == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			return r
		}
		return '_'
	}, code)
}

// MsgID is the deterministic Nats-Msg-Id of a dead letter: its origin
// message and site. A redelivered request that fails again within the
// stream's duplicates window is therefore stored once.
func MsgID(d event.DeadLetter) string {
	site := "event"
	if d.SiteID != "" {
		site = event.SiteKey(d.SiteID)
	}
	return "sitefollow-dlq:" + d.Origin.Stream + ":" + strconv.FormatUint(d.Origin.Sequence, 10) + ":" + site
}

// Publish stores d and returns once JetStream has acknowledged it.
func (p *Publisher) Publish(ctx context.Context, d event.DeadLetter) error {
	body, err := event.EncodeDeadLetter(d)
	if err != nil {
		return fmt.Errorf("publish dead letter: %w", err)
	}
	msg := nats.NewMsg(Subject(p.prefix, d.Error.Code))
	msg.Data = body
	msg.Header.Set(HeaderCode, d.Error.Code)
	if d.UserID != "" {
		msg.Header.Set(HeaderUser, d.UserID)
	}
	if d.Action != "" {
		msg.Header.Set(HeaderAction, string(d.Action))
	}
	if d.SiteID != "" {
		msg.Header.Set(HeaderSite, d.SiteID)
	}
	if _, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(MsgID(d))); err != nil {
		return fmt.Errorf("publish dead letter to %s: %w", msg.Subject, err)
	}
	return nil
}

// Stored is a dead letter as the stream holds it.
type Stored struct {
	event.DeadLetter
	Subject string
	MsgID   string
}

// List reads every dead letter in stream without consuming any: an
// ordered, ephemeral consumer reads them in stream order.
func List(ctx context.Context, js jetstream.JetStream, stream string) ([]Stored, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	var out []Stored
	for uint64(len(out)) < info.State.Msgs {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return out, fmt.Errorf("list dead letters: %w", err)
		}
		d, err := event.DecodeDeadLetter(m.Data())
		if err != nil {
			return out, fmt.Errorf("list dead letters: %w", err)
		}
		out = append(out, Stored{DeadLetter: d, Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader)})
	}
	return out, nil
}
