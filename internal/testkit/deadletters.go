package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
)

// SiteDeadLetter is a per-site dead letter as the consumer writes it: user
// failed to follow site with code, from request stream sequence origin.
func SiteDeadLetter(user, site, code string, origin uint64) event.DeadLetter {
	req := event.Request{UserID: user, Action: event.Follow, Source: "test", ID: "req-1"}
	return event.DeadLetter{
		UserID: user, Action: event.Follow, SiteID: site,
		Error:    event.Failure{Code: code, Message: "Graph refused " + code, HTTPStatus: 207},
		Attempts: 1, DeadAt: time.Now().UTC(),
		Origin: event.Origin{Stream: RequestStream, Sequence: origin, Subject: Subject, StreamCreated: time.Unix(1700000000, 0)},
		Event:  event.NarrowedEvent(req, site), Narrowed: true,
	}
}

// InvalidDeadLetter is the dead letter of an event that failed validation.
func InvalidDeadLetter(payload string, origin uint64) event.DeadLetter {
	d := event.DeadLetter{
		Error:    event.Failure{Code: event.CodeInvalidEvent, Message: "invalid event: payload is not JSON"},
		Attempts: 1, DeadAt: time.Now().UTC(),
		Origin: event.Origin{Stream: RequestStream, Sequence: origin, Subject: Subject, StreamCreated: time.Unix(1700000000, 0)},
	}
	d.SetPayloadPrefix([]byte(payload), len(payload))
	return d
}

// PublishDeadLetter stores d in the dead-letter stream as the consumer
// does and returns its dead-letter stream sequence.
func PublishDeadLetter(t testing.TB, js jetstream.JetStream, d event.DeadLetter) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := dlq.NewPublisher(js, "sitefollow.dlq").Publish(ctx, d); err != nil {
		t.Fatalf("publish dead letter: %v", err)
	}
	s, err := js.Stream(ctx, DeadLetterStream)
	if err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("dead-letter stream info: %v", err)
	}
	return info.State.LastSeq
}
