// Package dlq publishes dead letters: one message per failed (user, action,
// site), or per invalid event, on <prefix>.<error code>. A publish counts only
// once JetStream has stored it (PubAck), so the caller may then acknowledge
// the original request and nothing is lost.
package dlq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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
	// HeaderSiteURL names the site URL of a siteNotFound dead letter.
	HeaderSiteURL = "Sitefollow-Site-Url"
)

// Publisher publishes dead letters to JetStream.
type Publisher struct {
	js       jetstream.JetStream
	prefix   string
	recreate func(ctx context.Context) error
}

// NewPublisher returns a Publisher for subjects <prefix>.<code>.
func NewPublisher(js jetstream.JetStream, prefix string) *Publisher {
	return &Publisher{js: js, prefix: prefix}
}

// Errors a Publish may end in, besides the transport's: the dead letter
// was not stored, so the request it is about must not be acknowledged.
var (
	// ErrDuplicate means the dead-letter stream already held a message with
	// this dead letter's id although no earlier delivery could have stored
	// it: another message's dead letter, so this one was dropped.
	ErrDuplicate = errors.New("dead letter dropped as a duplicate")
)

// MsgID is the deterministic Nats-Msg-Id of a dead letter: its origin
// message (stream, the stream's creation time, sequence) and site. A
// redelivered request that fails again within the stream's duplicates
// window is therefore stored once, while a request stream re-created with
// sequences from 1 gives its messages new ids.
func MsgID(d event.DeadLetter) string {
	site := "event"
	switch {
	case d.SiteID != "":
		site = event.SiteKey(d.SiteID)
	case d.SiteURL != "":
		site = event.SiteURLKey(d.SiteURL)
	}
	created := "0"
	if !d.Origin.StreamCreated.IsZero() {
		created = strconv.FormatInt(d.Origin.StreamCreated.UnixNano(), 10)
	}
	return HeaderValue("sitefollow-dlq:" + d.Origin.Stream + ":" + created + ":" + strconv.FormatUint(d.Origin.Sequence, 10) + ":" + site)
}

// headerRoom is what a dead letter's headers and protocol line may take of
// the server's max_payload: the body gets the rest.
const headerRoom = 4 << 10

// Publish stores d and returns once JetStream has acknowledged it. d is
// first bounded (event.DeadLetter.Fit) to what the server accepts, so no
// field from outside can make it unstorable. A stream that has disappeared
// is re-created first when SetRecreate gave a way to.
func (p *Publisher) Publish(ctx context.Context, d event.DeadLetter) error {
	limit := event.MaxPayloadBytes * 2
	if mp := int(p.js.Conn().MaxPayload()); mp > 0 {
		limit = min(limit, mp-headerRoom)
	}
	d = d.Fit(limit)
	body, err := event.EncodeDeadLetter(d)
	if err != nil {
		return fmt.Errorf("publish dead letter: %w", err)
	}
	msg := nats.NewMsg(Subject(p.prefix, d.Error.Code))
	msg.Data = body
	msg.Header.Set(HeaderCode, HeaderValue(d.Error.Code))
	if d.UserID != "" {
		msg.Header.Set(HeaderUser, HeaderValue(d.UserID))
	}
	if d.Action != "" {
		msg.Header.Set(HeaderAction, HeaderValue(string(d.Action)))
	}
	if d.SiteID != "" {
		msg.Header.Set(HeaderSite, HeaderValue(d.SiteID))
	}
	if d.SiteURL != "" {
		msg.Header.Set(HeaderSiteURL, HeaderValue(d.SiteURL))
	}
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(MsgID(d)))
	if errors.Is(err, jetstream.ErrNoStreamResponse) && p.recreate != nil {
		if rerr := p.recreate(ctx); rerr != nil {
			return fmt.Errorf("publish dead letter to %s: %w (re-creating the stream: %w)", msg.Subject, err, rerr)
		}
		ack, err = p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(MsgID(d)))
	}
	if err != nil {
		return fmt.Errorf("publish dead letter to %s: %w", msg.Subject, err)
	}
	if ack.Duplicate && d.Attempts <= 1 {
		return fmt.Errorf("publish dead letter to %s: id %s: %w", msg.Subject, MsgID(d), ErrDuplicate)
	}
	return nil
}

// SetRecreate sets how Publish re-creates the dead-letter stream when it
// finds none (deleted while running); nil leaves a missing stream an error.
// Call it before the first Publish.
func (p *Publisher) SetRecreate(f func(ctx context.Context) error) { p.recreate = f }

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
