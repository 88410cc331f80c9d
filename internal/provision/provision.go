// Package provision creates or updates the JetStream streams and the durable
// consumer sitefollow depends on. It is idempotent, so every replica runs it
// at start-up; operators who manage streams as code skip it.
package provision

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Spec names the streams and consumer and their tuning.
type Spec struct {
	Stream        string
	Subjects      []string
	Consumer      string
	AckWait       time.Duration
	MaxDeliver    int
	MaxAckPending int

	DLQStream     string
	DLQSubjects   []string
	DLQDuplicates time.Duration
}

// RequestStream is the request stream's configuration: WorkQueue retention
// keeps a request until it is acknowledged, and no age or size limit exists
// to drop unprocessed ones. DiscardNew means that if an operator adds a
// limit, producers get an error instead of old requests vanishing.
func (s Spec) RequestStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        s.Stream,
		Description: "sitefollow follow/unfollow requests",
		Subjects:    s.Subjects,
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		MaxAge:      0,
	}
}

// DeadLetterStream is the dead-letter stream's configuration: kept until
// operators purge it, with a duplicates window so a failure redelivered
// after a crash is stored once.
func (s Spec) DeadLetterStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        s.DLQStream,
		Description: "sitefollow dead letters: one per failed (user, action, site) or invalid event",
		Subjects:    s.DLQSubjects,
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		MaxAge:      0,
		Duplicates:  s.DLQDuplicates,
	}
}

// ConsumerConfig is the durable pull consumer's configuration.
func (s Spec) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       s.Consumer,
		Description:   "sitefollow batching consumer",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.AckWait,
		MaxDeliver:    s.MaxDeliver,
		MaxAckPending: s.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// Apply creates or updates both streams and the consumer.
func Apply(ctx context.Context, js jetstream.JetStream, s Spec) (jetstream.Consumer, error) {
	if _, err := js.CreateOrUpdateStream(ctx, s.RequestStream()); err != nil {
		return nil, fmt.Errorf("provision stream %s: %w", s.Stream, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, s.DeadLetterStream()); err != nil {
		return nil, fmt.Errorf("provision stream %s: %w", s.DLQStream, err)
	}
	c, err := js.CreateOrUpdateConsumer(ctx, s.Stream, s.ConsumerConfig())
	if err != nil {
		return nil, fmt.Errorf("provision consumer %s on %s: %w", s.Consumer, s.Stream, err)
	}
	return c, nil
}

// Lookup finds the existing consumer and checks the dead-letter stream
// exists, for deployments that provision elsewhere.
func Lookup(ctx context.Context, js jetstream.JetStream, s Spec) (jetstream.Consumer, error) {
	if _, err := js.Stream(ctx, s.DLQStream); err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", s.DLQStream, err)
	}
	c, err := js.Consumer(ctx, s.Stream, s.Consumer)
	if err != nil {
		return nil, fmt.Errorf("look up consumer %s on %s: %w", s.Consumer, s.Stream, err)
	}
	return c, nil
}
