package dlq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/event"
)

// Record is one message of the dead-letter stream as the tools see it: its
// place and time in the stream, from JetStream, and its decoded body.
type Record struct {
	// Seq is the message's sequence in the dead-letter stream.
	Seq uint64
	// Time is when the stream stored it.
	Time    time.Time
	Subject string
	Header  nats.Header
	// Letter is the decoded body; zero when Err is set.
	Letter event.DeadLetter
	// Data is the body as stored.
	Data []byte
	// Err says why the body could not be decoded: such a record is listed
	// and can be purged, never replayed.
	Err error
}

// Store reads and deletes the records of one dead-letter stream.
type Store struct {
	stream  jetstream.Stream
	name    string
	created time.Time
}

// ErrNotFound means no record has the sequence asked for.
var ErrNotFound = errors.New("no dead letter with that sequence")

// Open returns the Store of the dead-letter stream name.
func Open(ctx context.Context, js jetstream.JetStream, name string) (*Store, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("open dead-letter stream %s: %w", name, err)
	}
	info := s.CachedInfo()
	return &Store{stream: s, name: name, created: info.Created}, nil
}

// Name is the dead-letter stream's name.
func (s *Store) Name() string { return s.name }

// Created is when the dead-letter stream was created: with a sequence it
// names a record even after the stream is re-created.
func (s *Store) Created() time.Time { return s.created }

// Scan calls visit with every record f selects, in stream order, up to
// the last one stored when Scan began (so records added meanwhile, such as
// a replay's own failures, are not visited). Each record is read with one
// direct request, so deleting records while scanning is safe.
func (s *Store) Scan(ctx context.Context, f Filter, visit func(Record) error) error {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("scan dead letters in %s: %w", s.name, err)
	}
	last := info.State.LastSeq
	if f.LastSeq != 0 {
		last = min(last, f.LastSeq)
	}
	for seq := max(info.State.FirstSeq, f.FirstSeq, 1); info.State.Msgs > 0 && seq <= last; {
		m, err := s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("scan dead letters in %s at %d: %w", s.name, seq, err)
		}
		if m.Sequence > last {
			return nil
		}
		seq = m.Sequence + 1
		r := record(m)
		if !f.Match(r) {
			continue
		}
		if err := visit(r); err != nil {
			return err
		}
	}
	return nil
}

// Get returns the record with stream sequence seq; ErrNotFound if none.
func (s *Store) Get(ctx context.Context, seq uint64) (Record, error) {
	m, err := s.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Record{}, fmt.Errorf("get dead letter %d from %s: %w", seq, s.name, ErrNotFound)
	}
	if err != nil {
		return Record{}, fmt.Errorf("get dead letter %d from %s: %w", seq, s.name, err)
	}
	return record(m), nil
}

// Delete removes the record with sequence seq. A record already gone
// (another replay or purge took it) is not an error: either way it is no
// longer in the stream.
func (s *Store) Delete(ctx context.Context, seq uint64) error {
	err := s.stream.DeleteMsg(ctx, seq)
	if err == nil {
		return nil
	}
	// The server's refusal for a sequence it no longer holds reaches the
	// client only as text, so ask whether the record is still there.
	if _, gerr := s.stream.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return fmt.Errorf("delete dead letter %d from %s: %w", seq, s.name, err)
}

func record(m *jetstream.RawStreamMsg) Record {
	r := Record{Seq: m.Sequence, Time: m.Time, Subject: m.Subject, Header: m.Header, Data: m.Data}
	r.Letter, r.Err = event.DecodeDeadLetter(m.Data)
	return r
}
