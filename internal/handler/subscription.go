package handler

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"time"
	"unique"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
)

// subscription is the live Consume of one consumer. Only the loop goroutine
// touches it.
type subscription struct {
	h      *Handler
	open   OpenConsumer
	inbox  *mailbox
	intake *intake
	// resolver takes deliveries with site URLs not cached.
	resolver *resolveStage
	errs     chan error
	cc       jetstream.ConsumeContext
}

func (h *Handler) subscribe(ctx context.Context, open OpenConsumer, inbox *mailbox, in *intake, resolver *resolveStage) (*subscription, error) {
	s := &subscription{h: h, open: open, inbox: inbox, intake: in, resolver: resolver, errs: make(chan error, 16)}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *subscription) start(ctx context.Context) error {
	cons, err := s.open(ctx)
	if err != nil {
		return err
	}
	// Read after the consumer exists: a stream re-created since has a new
	// creation time, and every message this subscription delivers is its.
	epoch, err := s.h.ledger.StreamCreated(ctx)
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) { s.receive(msg, epoch) },
		// Sized by bytes, so large messages cannot fill memory.
		jetstream.PullMaxBytes(s.h.cfg.PullMaxBytes),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			select {
			case s.errs <- err:
			default: // the loop logs errors; dropping a repeat loses no message
			}
		}))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	s.cc = cc
	return nil
}

// receive is the Consume callback: decode, then hand over. It never does
// I/O; it waits only while this process holds all it should (see intake),
// or while the resolver stage is full (a request with site URLs not
// cached goes there rather than to the loop).
//
// Of the message it keeps only what settling it needs: a valid request's
// payload is dropped once decoded, an invalid one's cut to what its dead
// letter carries, and one larger than EventMaxBytes is not parsed at all.
// Strings many messages share (user, subject, source) are interned.
func (s *subscription) receive(msg jetstream.Msg, epoch time.Time) {
	s.intake.take()
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery; nothing to ack, nothing lost.
		s.intake.give(1, 0, 0)
		s.h.log.Error().Err(err).Str("subject", event.Truncate(msg.Subject(), 256)).Msg("message without JetStream metadata ignored")
		return
	}
	data := msg.Data()
	t := &tracked{progress: s.h.ticks(s.h.cfg.Now())}
	t.ticket.Msg, t.ticket.Seq = t, meta.Sequence.Stream
	o := origin{stream: meta.Stream, created: epoch, subject: msg.Subject()}
	t.keepReply(&o, msg.Reply(), meta.NumDelivered, meta.Sequence.Consumer, meta.Timestamp.UnixNano(), meta.NumPending)
	d := delivery{t: t, pending: meta.NumPending}
	var req event.Request
	if len(data) > s.h.cfg.EventMaxBytes {
		err = &event.InvalidError{Reason: fmt.Sprintf("event of %d bytes exceeds the %d allowed (SITEFOLLOW_EVENT_MAX_BYTES)", len(data), s.h.cfg.EventMaxBytes)}
	} else {
		req, err = s.h.decoder.Decode(data)
	}
	payload := 0
	if err != nil {
		bad := &invalidEvent{err: err, size: len(data), payload: bytes.Clone(data[:min(len(data), event.MaxPayloadBytes)])}
		if len(data) <= s.h.cfg.EventMaxBytes {
			bad.userID, bad.action = event.Peek(data)
		}
		t.setRare().bad, payload = bad, len(bad.payload)
	} else {
		d.sites, d.action, d.userID = req.SiteIDs, req.Action, req.UserID
		if len(req.SiteURLs) > 0 {
			// Cached URLs become ids here (memory only); the rest go to the
			// resolver stage, which does the I/O this callback must not.
			d.sites, d.urls = s.h.cachedSites(req.SiteIDs, req.SiteURLs)
		}
		o.source = req.Source
		if req.ID != "" || req.OccurredAt != "" {
			r := t.setRare()
			r.id, r.occurredAt = req.ID, req.OccurredAt
		}
		t.sites = uint16(min(len(req.SiteIDs)+len(req.SiteURLs), math.MaxUint16))
	}
	// Only replayed requests carry it, so most messages keep no rare part.
	if n := dlq.ParseReplayCount(msg.Headers().Get(dlq.HeaderReplayCount)); n > 0 {
		t.setRare().replays = uint32(n)
	}
	t.origin = unique.Make(o)
	s.intake.takeBytes(t.cost(), payload)
	if len(d.urls) > 0 {
		s.resolver.submit(d)
		return
	}
	s.inbox.put(d)
}

// restart rebuilds the subscription after the client gave up on it, retrying
// until it works or ctx ends.
func (s *subscription) restart(ctx context.Context) {
	s.cc.Stop()
	b := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(10*time.Second)), ctx)
	err := backoff.RetryNotify(func() error { return s.start(ctx) }, b, func(err error, d time.Duration) {
		s.h.log.Warn().Err(err).Str("retryIn", d.Round(time.Millisecond).String()).Msg("consumer unavailable; retrying")
	})
	if err != nil {
		s.h.log.Warn().Err(err).Msg("gave up restarting the consumer: shutting down")
		return
	}
	s.h.log.Info().Msg("consumer subscription restored")
}

// stop stops pulling; messages already buffered by the client are still
// delivered to the inbox so they are flushed rather than left to AckWait.
func (s *subscription) stop() {
	s.cc.Drain()
	select {
	case <-s.cc.Closed():
	case <-time.After(5 * time.Second):
		s.cc.Stop()
	}
}
