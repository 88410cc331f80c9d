package dlq

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/event"
)

// Headers a replayed request carries, and where it is published.
const (
	// HeaderReplayOf is the dead-letter stream sequence of the record the
	// request was replayed from.
	HeaderReplayOf = "Sitefollow-Replay-Of"
	// HeaderReplayCount is how many times the request has been replayed,
	// this time included; its dead letter keeps it as replays.
	HeaderReplayCount = "Sitefollow-Replay-Count"
	// ReplaySubject is the request subject replays are published on.
	ReplaySubject = "sitefollow.requests.replay"
	// DefaultMaxReplays is how many replays a record may have had before
	// replay refuses it without --force.
	DefaultMaxReplays = 3
	// MaxReplayCount caps a Sitefollow-Replay-Count read from a message.
	MaxReplayCount = 1_000_000
)

// ParseReplayCount reads a Sitefollow-Replay-Count header value. The value
// comes from outside, so anything but a non-negative decimal integer counts
// as 0 and a huge one as MaxReplayCount; it never fails.
func ParseReplayCount(s string) int {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 64 {
		return 0
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0
		}
	}
	s = strings.TrimLeft(s, "0")
	if len(s) > len(strconv.Itoa(MaxReplayCount)) {
		return MaxReplayCount
	}
	n, err := strconv.Atoi(cmp.Or(s, "0"))
	if err != nil {
		return 0
	}
	return min(n, MaxReplayCount)
}

// ErrNotReplayable classifies a record replay cannot turn into a request:
// an invalidEvent (no single site), one whose body did not decode, or one
// whose fields no longer make a valid request.
var ErrNotReplayable = errors.New("dead letter cannot be replayed")

// ReplayRequest is the one-site request a replay of d publishes: d's
// userId, action and siteIds [siteId], with the original event's id,
// occurredAt and source when it carried them. It validates as a follow
// request, or the error wraps ErrNotReplayable.
func ReplayRequest(d event.DeadLetter) (event.Request, error) {
	if d.SiteID == "" && d.SiteURL == "" || d.Error.Code == event.CodeInvalidEvent {
		return event.Request{}, fmt.Errorf("%w: %s concerns the whole event, not one site", ErrNotReplayable, event.CodeInvalidEvent)
	}
	req := event.Request{UserID: d.UserID, Action: d.Action, SiteIDs: []string{d.SiteID}}
	if d.SiteID == "" {
		// A site URL that did not resolve (siteNotFound): replayed by URL,
		// once the site exists or the producer's URL is fixed.
		req.SiteIDs, req.SiteURLs = nil, []string{d.SiteURL}
	}
	if len(d.Event) > 0 {
		if orig, err := (event.Decoder{}).Decode(d.Event); err == nil {
			req.ID, req.OccurredAt, req.Source = orig.ID, orig.OccurredAt, orig.Source
		}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return event.Request{}, fmt.Errorf("%w: %w", ErrNotReplayable, err)
	}
	if _, err := (event.Decoder{}).Decode(body); err != nil {
		return event.Request{}, fmt.Errorf("%w: %w", ErrNotReplayable, err)
	}
	return req, nil
}

// Plan sorts selected records by what replay does with them.
type Plan struct {
	// Replay are the records to republish.
	Replay []Record
	// Invalid are invalidEvent records, which name no site to replay.
	Invalid []Record
	// Capped have been replayed MaxReplays times or more already.
	Capped []Record
	// Unreplayable did not decode or no longer make a valid request.
	Unreplayable []Record
}

// PlanReplay sorts recs for a replay that refuses records replayed
// maxReplays times or more unless force.
func PlanReplay(recs []Record, maxReplays int, force bool) Plan {
	var p Plan
	for _, r := range recs {
		switch {
		case r.Err != nil:
			p.Unreplayable = append(p.Unreplayable, r)
		case r.Letter.Error.Code == event.CodeInvalidEvent || r.Letter.SiteID == "" && r.Letter.SiteURL == "":
			p.Invalid = append(p.Invalid, r)
		case r.Letter.Replays >= maxReplays && !force:
			p.Capped = append(p.Capped, r)
		default:
			if _, err := ReplayRequest(r.Letter); err != nil {
				p.Unreplayable = append(p.Unreplayable, r)
				continue
			}
			p.Replay = append(p.Replay, r)
		}
	}
	return p
}

// Replayer republishes dead letters as requests and then removes them.
type Replayer struct {
	store   *Store
	js      jetstream.JetStream
	stream  string
	subject string
}

// NewReplayer returns a Replayer publishing on subject, which the request
// stream named stream must capture: a PubAck from any other stream is
// refused.
func NewReplayer(store *Store, js jetstream.JetStream, stream, subject string) (*Replayer, error) {
	switch {
	case store == nil || js == nil:
		return nil, errors.New("new replayer: store and JetStream are required")
	case stream == "" || subject == "":
		return nil, errors.New("new replayer: request stream and subject are required")
	}
	return &Replayer{store: store, js: js, stream: stream, subject: subject}, nil
}

// MsgID is the Nats-Msg-Id of the replay of the record with sequence seq:
// distinct per record and the same on every run, so the request stream
// drops a second publish of it within its duplicates window. The
// dead-letter stream's creation time tells apart records of a re-created
// stream whose sequences started again at 1.
func (r *Replayer) MsgID(seq uint64) string {
	return "sitefollow-replay:" + r.store.Name() + ":" + strconv.FormatInt(r.store.Created().UnixNano(), 10) + ":" + strconv.FormatUint(seq, 10)
}

// Message is the request message replaying rec.
func (r *Replayer) Message(rec Record) (*nats.Msg, error) {
	if rec.Err != nil {
		return nil, fmt.Errorf("replay dead letter %d: %w: %w", rec.Seq, ErrNotReplayable, rec.Err)
	}
	req, err := ReplayRequest(rec.Letter)
	if err != nil {
		return nil, fmt.Errorf("replay dead letter %d: %w", rec.Seq, err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("replay dead letter %d: %w", rec.Seq, err)
	}
	m := nats.NewMsg(r.subject)
	m.Data = body
	m.Header.Set(HeaderReplayOf, strconv.FormatUint(rec.Seq, 10))
	m.Header.Set(HeaderReplayCount, strconv.Itoa(min(rec.Letter.Replays, MaxReplayCount-1)+1))
	m.Header.Set(jetstream.MsgIDHeader, r.MsgID(rec.Seq))
	return m, nil
}

// Publish publishes rec's request and returns once the request stream has
// stored it; duplicate says the stream already held it (an earlier run
// published it and stopped before deleting the record).
func (r *Replayer) Publish(ctx context.Context, rec Record) (duplicate bool, err error) {
	m, err := r.Message(rec)
	if err != nil {
		return false, err
	}
	ack, err := r.js.PublishMsg(ctx, m, jetstream.WithExpectStream(r.stream))
	if err != nil {
		return false, fmt.Errorf("replay dead letter %d: publish to %s: %w", rec.Seq, r.subject, err)
	}
	return ack.Duplicate, nil
}

// deleteTimeout bounds deleting a record whose request was published.
const deleteTimeout = 10 * time.Second

// Replay publishes rec's request, waits for the PubAck, then deletes rec.
// Stopped anywhere, rec is still in the dead-letter stream or its request
// is in the request stream: never neither. Once published the delete is
// attempted even if ctx has just ended, so an interrupted run leaves as
// few records to be deduplicated by a later one as it can.
func (r *Replayer) Replay(ctx context.Context, rec Record) (duplicate bool, err error) {
	duplicate, err = r.Publish(ctx, rec)
	if err != nil {
		return false, err
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
	defer cancel()
	if err := r.store.Delete(dctx, rec.Seq); err != nil {
		return duplicate, fmt.Errorf("replay dead letter %d: published, but: %w", rec.Seq, err)
	}
	return duplicate, nil
}

// ReplayAll replays recs in order, calling step after each, and stops at
// the first failure or when ctx ends. It returns how many were replayed.
func (r *Replayer) ReplayAll(ctx context.Context, recs []Record, step func(rec Record, duplicate bool)) (int, error) {
	done := 0
	for _, rec := range recs {
		if err := ctx.Err(); err != nil {
			return done, fmt.Errorf("replay: %w", err)
		}
		dup, err := r.Replay(ctx, rec)
		if err != nil {
			return done, err
		}
		done++
		if step != nil {
			step(rec, dup)
		}
	}
	return done, nil
}
