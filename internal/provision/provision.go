// Package provision creates or updates the JetStream streams, the durable
// consumer and the key-value bucket sitefollow depends on. It is idempotent,
// so every replica runs it at start-up; operators who manage them as code
// skip it.
//
// On an existing stream or bucket it only adds what sitefollow needs: its
// subjects, and more replicas when SITEFOLLOW_STREAM_REPLICAS asks for more.
// It never lowers the replicas, nor touches the limits, retention or storage
// an operator chose; a difference it leaves alone is reported, and a
// retention that cannot work (a request stream that is not a work queue) is
// refused with a *ConflictError.
package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/ledger"
)

// Spec names the streams, consumer and bucket and their tuning.
type Spec struct {
	Stream        string
	Subjects      []string
	Consumer      string
	AckWait       time.Duration
	MaxDeliver    int
	MaxAckPending int
	// Replicas is the replication of both streams and the bucket when
	// provisioning creates them, and the least an existing one is raised to.
	// 0 means 1.
	Replicas int
	// Duplicates is the request stream's window for producers'
	// Nats-Msg-Id: a request published again within it is stored once.
	Duplicates time.Duration

	DLQStream     string
	DLQSubjects   []string
	DLQDuplicates time.Duration

	// StateBucket is the key-value bucket of the ledger; LeaseTTL its
	// leases' lifetime (also how long TTL markers stay).
	StateBucket string
	LeaseTTL    time.Duration

	// Report, when set, is told each difference provisioning found on an
	// existing stream and left as the operator set it.
	Report func(note string)
}

// SpecFrom derives the spec from the consumer's settings: the one place
// they are mapped, for the consumer and for tools that provision ahead of it.
func SpecFrom(c config.Config) Spec {
	return Spec{
		Stream:        c.Stream,
		Subjects:      strings.Split(c.StreamSubjects, ","),
		Consumer:      c.Consumer,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		Replicas:      c.StreamReplicas,
		Duplicates:    c.StreamDuplicateWindow,
		DLQStream:     c.DLQStream,
		DLQSubjects:   []string{c.DLQSubjectPrefix + ".>"},
		DLQDuplicates: c.DLQDuplicateWindow,
		StateBucket:   c.StateBucket,
		LeaseTTL:      c.LeaseTTL,
	}
}

func (s Spec) replicas() int { return max(s.Replicas, 1) }

func (s Spec) report(format string, args ...any) {
	if s.Report != nil {
		s.Report(fmt.Sprintf(format, args...))
	}
}

// ConflictError reports an existing stream or bucket whose configuration
// sitefollow cannot work with and will not change on its own.
type ConflictError struct {
	Name   string
	Field  string
	Have   string
	Want   string
	Reason string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("stream %s has %s %s, sitefollow needs %s (%s); change it or remove the stream", e.Name, e.Field, e.Have, e.Want, e.Reason)
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
		Duplicates:  s.Duplicates,
		Replicas:    s.replicas(),
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
		Replicas:    s.replicas(),
	}
}

// StateBucketConfig is the ledger's key-value bucket.
func (s Spec) StateBucketConfig() jetstream.KeyValueConfig {
	return ledger.BucketConfig(s.StateBucket, s.replicas(), s.LeaseTTL)
}

// ConsumerConfig is the durable pull consumer's configuration. Its replicas
// follow the stream's. Its MaxDeliver is unlimited whatever Spec.MaxDeliver
// says: the consumer applies SITEFOLLOW_MAX_DELIVER itself, from each
// message's delivery count, so a request whose dead letter cannot be stored
// stays redeliverable instead of being left in the stream for good.
func (s Spec) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       s.Consumer,
		Description:   "sitefollow batching consumer",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: s.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// Apply creates what is missing, raises what is below the spec, and returns
// the consumer.
func Apply(ctx context.Context, js jetstream.JetStream, s Spec) (jetstream.Consumer, error) {
	if err := ensureStream(ctx, js, s, s.RequestStream()); err != nil {
		return nil, err
	}
	if err := ensureStream(ctx, js, s, s.DeadLetterStream()); err != nil {
		return nil, err
	}
	if err := ensureBucket(ctx, js, s); err != nil {
		return nil, err
	}
	c, err := js.CreateOrUpdateConsumer(ctx, s.Stream, s.ConsumerConfig())
	if err != nil {
		return nil, fmt.Errorf("provision consumer %s on %s: %w", s.Consumer, s.Stream, err)
	}
	return c, nil
}

// EnsureDeadLetterStream creates the dead-letter stream when it is missing
// (deleted while the consumer runs), as Apply would; dlq.Publisher calls it
// when a publish finds no stream.
func EnsureDeadLetterStream(ctx context.Context, js jetstream.JetStream, s Spec) error {
	return ensureStream(ctx, js, s, s.DeadLetterStream())
}

// ensureStream creates want, or reconciles an existing stream with it.
func ensureStream(ctx context.Context, js jetstream.JetStream, s Spec, want jetstream.StreamConfig) error {
	st, err := js.Stream(ctx, want.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if _, err := js.CreateStream(ctx, want); err != nil {
			return fmt.Errorf("provision stream %s: %w", want.Name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("provision stream %s: %w", want.Name, err)
	}
	have := st.CachedInfo().Config
	next, changed, err := reconcile(s, have, want)
	if err != nil || !changed {
		return err
	}
	if _, err := js.UpdateStream(ctx, next); err != nil {
		return fmt.Errorf("provision stream %s: update: %w", want.Name, err)
	}
	return nil
}

// reconcile is have with what sitefollow needs of want added: want's
// subjects, at least want's replicas and duplicates window, TTLs where want
// allows them. Everything else stays as the operator set it; differences
// are reported.
func reconcile(s Spec, have, want jetstream.StreamConfig) (jetstream.StreamConfig, bool, error) {
	if have.Retention != want.Retention {
		return have, false, &ConflictError{Name: have.Name, Field: "retention", Have: have.Retention.String(), Want: want.Retention.String(),
			Reason: retentionReason(want.Retention)}
	}
	next := have
	changed := false
	for _, subj := range want.Subjects {
		if !slices.Contains(next.Subjects, subj) {
			next.Subjects = append(slices.Clone(next.Subjects), subj)
			changed = true
		}
	}
	if want.Replicas > have.Replicas {
		next.Replicas = want.Replicas
		changed = true
	} else if want.Replicas < have.Replicas {
		s.report("stream %s: keeping its %d replicas (SITEFOLLOW_STREAM_REPLICAS asks for %d; provisioning never lowers them)", have.Name, have.Replicas, want.Replicas)
	}
	if want.Duplicates > have.Duplicates {
		next.Duplicates = want.Duplicates
		changed = true
	}
	if want.AllowMsgTTL && !have.AllowMsgTTL {
		next.AllowMsgTTL, next.SubjectDeleteMarkerTTL = true, want.SubjectDeleteMarkerTTL
		changed = true
	}
	if next.Description == "" {
		next.Description = want.Description
	}
	for _, d := range []struct {
		field      string
		have, want any
	}{
		{"storage", have.Storage, want.Storage},
		{"max messages", have.MaxMsgs, want.MaxMsgs},
		{"max bytes", have.MaxBytes, want.MaxBytes},
		{"max age", have.MaxAge, want.MaxAge},
		{"discard policy", have.Discard, want.Discard},
	} {
		if d.have != d.want {
			s.report("stream %s: keeping its %s %v (sitefollow would set %v)", have.Name, d.field, d.have, d.want)
		}
	}
	return next, changed, nil
}

func retentionReason(want jetstream.RetentionPolicy) string {
	if want == jetstream.WorkQueuePolicy {
		return "acknowledged requests must leave the stream, and only there does a pending count mean work to do"
	}
	return "dead letters and state must stay until removed on purpose"
}

// ensureBucket creates the ledger's bucket, or reconciles the stream behind
// an existing one the same way as the other streams.
func ensureBucket(ctx context.Context, js jetstream.JetStream, s Spec) error {
	want := s.StateBucketConfig()
	_, err := js.KeyValue(ctx, want.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		if _, err := js.CreateKeyValue(ctx, want); err != nil {
			return fmt.Errorf("provision bucket %s: %w", want.Bucket, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("provision bucket %s: %w", want.Bucket, err)
	}
	return ensureStream(ctx, js, s, jetstream.StreamConfig{
		Name:                   "KV_" + want.Bucket,
		Subjects:               []string{"$KV." + want.Bucket + ".>"},
		Retention:              jetstream.LimitsPolicy,
		Storage:                want.Storage,
		Discard:                jetstream.DiscardNew,
		MaxMsgs:                -1,
		MaxBytes:               -1,
		Replicas:               want.Replicas,
		AllowMsgTTL:            true,
		SubjectDeleteMarkerTTL: want.LimitMarkerTTL,
	})
}

// Lookup finds the existing consumer and checks the dead-letter stream and
// the bucket exist, for deployments that provision elsewhere.
func Lookup(ctx context.Context, js jetstream.JetStream, s Spec) (jetstream.Consumer, error) {
	if _, err := js.Stream(ctx, s.DLQStream); err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", s.DLQStream, err)
	}
	kv, err := js.KeyValue(ctx, s.StateBucket)
	if err != nil {
		return nil, fmt.Errorf("look up bucket %s: %w", s.StateBucket, err)
	}
	status, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("look up bucket %s: %w", s.StateBucket, err)
	}
	if status.LimitMarkerTTL() == 0 {
		return nil, &ConflictError{Name: "KV_" + s.StateBucket, Field: "per-key TTLs", Have: "off", Want: "on (limit marker TTL)",
			Reason: "leases must expire when a replica dies"}
	}
	c, err := js.Consumer(ctx, s.Stream, s.Consumer)
	if err != nil {
		return nil, fmt.Errorf("look up consumer %s on %s: %w", s.Consumer, s.Stream, err)
	}
	if md := c.CachedInfo().Config.MaxDeliver; md > 0 {
		s.report("consumer %s: MaxDeliver is %d; a request whose dead letter cannot be stored is left in the stream after that many deliveries (set it to -1: sitefollow applies SITEFOLLOW_MAX_DELIVER itself)", s.Consumer, md)
	}
	return c, nil
}
