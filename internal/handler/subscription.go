package handler

import (
	"context"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
)

// subscription is the live Consume of one consumer. Only the loop goroutine
// touches it.
type subscription struct {
	h      *Handler
	open   OpenConsumer
	inbox  chan<- delivery
	intake *intake
	errs   chan error
	cc     jetstream.ConsumeContext
}

func (h *Handler) subscribe(ctx context.Context, open OpenConsumer, inbox chan<- delivery, in *intake) (*subscription, error) {
	s := &subscription{h: h, open: open, inbox: inbox, intake: in, errs: make(chan error, 16)}
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
	cc, err := cons.Consume(s.receive,
		jetstream.PullMaxMessages(s.h.cfg.PullMaxMessages),
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
// I/O; it waits only while this process holds all it should (see intake).
func (s *subscription) receive(msg jetstream.Msg) {
	s.intake.take()
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery; nothing to ack, nothing lost.
		s.intake.give(1)
		s.h.log.Error().Err(err).Str("subject", msg.Subject()).Msg("message without JetStream metadata ignored")
		return
	}
	d := delivery{t: &tracked{msg: msg, meta: meta, progress: s.h.cfg.Now()}}
	d.req, d.t.err = s.h.decoder.Decode(msg.Data())
	s.inbox <- d
}

// restart rebuilds the subscription after the client gave up on it, retrying
// until it works or ctx ends.
func (s *subscription) restart(ctx context.Context) {
	s.cc.Stop()
	b := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(10*time.Second)), ctx)
	err := backoff.RetryNotify(func() error { return s.start(ctx) }, b, func(err error, d time.Duration) {
		s.h.log.Warn().Err(err).Dur("retryIn", d).Msg("consumer unavailable; retrying")
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
