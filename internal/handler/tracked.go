package handler

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"time"
	"unique"

	"github.com/sitefollow/sitefollow/internal/batch"
	"github.com/sitefollow/sitefollow/internal/event"
)

// tracked is one delivered message while the handler holds it: only what
// settling it and its dead letters need, in fixed-size fields and interned
// strings, because a backlog spread over many users is coalesced only if
// hundreds of thousands of messages can be held at once (80 bytes here,
// plus the aggregator's entry per site). Never the payload of a valid
// request, nor the parsed JetStream metadata, nor even the reply subject:
// that is the subscription's prefix and five numbers, kept here, from which
// it is rebuilt for each acknowledgement.
type tracked struct {
	// ticket is the message's place in the aggregator; ticket.Msg is the
	// message itself and ticket.Seq its stream sequence.
	ticket batch.Ticket[*tracked]
	// origin is what the message shares with others from the same
	// subscription and subject: stream, its creation, subject, source and
	// the reply subjects' common prefix.
	origin unique.Handle[origin]
	// rare holds what only some messages have; nil for most. The user id
	// is not kept: the batch carries it (the first pending request's),
	// and only one that differs from it (in case) is kept in rare.
	rare *rare
	// progress is when the server last heard the message is being worked
	// on (its arrival, or the latest InProgress), in ticks (Handler.ticks).
	progress uint32
	// consumerSeq, stamp (the message's time, Unix nanoseconds) and
	// pending (undelivered when it was sent) are the reply subject's
	// numbers besides the stream sequence and delivery count.
	consumerSeq uint64
	stamp       int64
	pending     uint32
	// sites is how many sites the request named, which sets what it is
	// charged against the intake's memory bound (heldCost).
	sites uint16
	// notBefore is the longest Retry-After Graph gave for one of the
	// message's sites, in milliseconds; a NAK never asks for redelivery
	// sooner.
	notBefore uint32
	// slot is the message's place in the loop's heldSet.
	slot uint32
	// delivered is the delivery count (JetStream's NumDelivered).
	delivered uint16
	// unstored says a dead letter for the message could not be stored, so
	// it is NAKed and counted as stranded until one is.
	unstored bool
}

// rare is what only some held messages carry.
type rare struct {
	// id and occurredAt are the request's optional fields, for its dead
	// letters; user its userId where the batch carries it in another case.
	id, occurredAt, user string
	// reply is the reply subject when the numbers kept cannot rebuild it
	// exactly (a layout this code does not know).
	reply string
	// bad is set for an event that failed validation.
	bad *invalidEvent
	// replays is the request's Sitefollow-Replay-Count: how many times
	// `consumer dlq replay` republished it, for its dead letters.
	replays uint32
	// userWait is how long the request waits for its user's account to
	// become visible to Graph (see Handler.newUser), 0 when it does not
	// wait; waitCounted says this delivery was counted as a wait.
	userWait    time.Duration
	waitCounted bool
	// waitsRead says waits holds the request's count of deliveries spent
	// waiting, read once per delivery (see Handler.waits).
	waitsRead bool
	waits     uint64
}

// origin is where a message came from, shared by every message of one
// subscription and subject.
type origin struct {
	stream  string
	created time.Time // when the stream was created, as read at subscribing
	subject string
	source  string // the request's source field
	// replyPrefix is the reply subjects' part before the numbers,
	// "$JS.ACK.<stream>.<consumer>." or longer; empty when the reply is
	// kept whole (rare.reply).
	replyPrefix string
}

// invalidEvent is what a dead letter for an event that failed validation
// carries: the reason, the beginning of the payload (at most
// event.MaxPayloadBytes) and its full length, and the user and action if
// they could be read.
type invalidEvent struct {
	err     error
	payload []byte
	size    int
	userID  string
	action  event.Action
}

func (t *tracked) seq() uint64 { return t.ticket.Seq }

// invalid is the validation failure, nil for a valid request.
func (t *tracked) invalid() *invalidEvent {
	if t.rare == nil {
		return nil
	}
	return t.rare.bad
}

// keepReply records the reply subject r of the message with stream
// sequence seq as the prefix (in o) and the numbers JetStream puts after
// it, or whole (in rare) when those do not rebuild it exactly.
func (t *tracked) keepReply(o *origin, r string, delivered, consumerSeq uint64, stamp int64, pending uint64) {
	if delivered <= math.MaxUint16 && pending <= math.MaxUint32 && stamp >= 0 {
		t.delivered, t.consumerSeq, t.stamp, t.pending = uint16(delivered), consumerSeq, stamp, uint32(pending)
		tail := t.replyNumbers(make([]byte, 0, 64))
		if n := len(r) - len(tail); n > 0 && r[n-1] == '.' && r[n:] == string(tail) {
			o.replyPrefix = r[:n]
			return
		}
	}
	t.delivered = uint16(min(delivered, math.MaxUint16))
	// The publish time still starts a new user's window.
	t.stamp = max(stamp, 0)
	t.setRare().reply = r
}

// replyNumbers appends "<delivered>.<stream seq>.<consumer seq>.<time>.<pending>".
func (t *tracked) replyNumbers(b []byte) []byte {
	b = strconv.AppendUint(b, uint64(t.delivered), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, t.ticket.Seq, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, t.consumerSeq, 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, t.stamp, 10)
	b = append(b, '.')
	return strconv.AppendUint(b, uint64(t.pending), 10)
}

// reply is the subject acknowledgements go to.
func (t *tracked) reply() string {
	if t.rare != nil && t.rare.reply != "" {
		return t.rare.reply
	}
	prefix := t.origin.Value().replyPrefix
	return string(t.replyNumbers(append(make([]byte, 0, len(prefix)+64), prefix...)))
}

// request is the request without its sites (the batch holds those), for
// the per-site dead letters; batchUser is the user id its batch carries.
func (t *tracked) request(batchUser string) event.Request {
	user := batchUser
	if t.rare != nil {
		user = cmp.Or(t.rare.user, batchUser)
	}
	return t.requestAs(user, t.ticket.Action())
}

// requestAs is the request t carried, for user and action as given: before
// the aggregator has the message (the resolver stage), the ticket knows
// neither.
func (t *tracked) requestAs(user string, action event.Action) event.Request {
	r := event.Request{UserID: user, Action: action, Source: t.origin.Value().source}
	if t.rare != nil {
		r.ID, r.OccurredAt = t.rare.id, t.rare.occurredAt
	}
	return r
}

// replays is how many times the request was replayed from the
// dead-letter stream, 0 for most.
func (t *tracked) replays() int {
	if t.rare == nil {
		return 0
	}
	return int(t.rare.replays)
}

// setRare returns t's rare fields, made if need be.
func (t *tracked) setRare() *rare {
	if t.rare == nil {
		t.rare = &rare{}
	}
	return t.rare
}

// cost is what the message is charged against the intake's memory bound.
func (t *tracked) cost() int { return heldCost(int(t.sites)) }

// retryAfter is notBefore as a duration.
func (t *tracked) retryAfter() time.Duration { return time.Duration(t.notBefore) * time.Millisecond }

// userWait is how long the message waits for its user's account, 0 when
// it does not.
func (t *tracked) userWait() time.Duration {
	if t.rare == nil {
		return 0
	}
	return t.rare.userWait
}

// holdRetryAfter raises notBefore to d.
func (t *tracked) holdRetryAfter(d time.Duration) {
	ms := min(d.Milliseconds(), math.MaxUint32)
	t.notBefore = max(t.notBefore, uint32(max(ms, 0)))
}

// Held-memory estimate: what a held message costs on the heap, by parts,
// as measured by TestHeldMessageMemory (tracked and its place in the held
// set, and per site an aggregator entry in its user's list, the user's
// share and its deadline). Interned strings (sites, users, subjects) are
// shared and not counted.
const (
	heldMessageBytes = 112
	heldSiteBytes    = 64
)

// heldCost is what a message with sites sites is charged against the
// intake's memory bound.
func heldCost(sites int) int {
	return heldMessageBytes + sites*heldSiteBytes
}

// heldSet is every message delivered and not yet settled, in no order: a
// slice of pointers, each message knowing its slot, so adding and removing
// cost no hashing and no allocation, and a message only 8 bytes here.
type heldSet struct {
	list []*tracked
}

func (s *heldSet) add(t *tracked) {
	t.slot = uint32(len(s.list))
	s.list = append(s.list, t)
}

func (s *heldSet) remove(t *tracked) {
	i := int(t.slot)
	if i >= len(s.list) || s.list[i] != t {
		return
	}
	last := len(s.list) - 1
	s.list[i] = s.list[last]
	s.list[i].slot = uint32(i)
	s.list[last] = nil
	s.list = s.list[:last]
	if cap(s.list) > 1024 && len(s.list) < cap(s.list)/4 {
		// Give back what a past backlog needed.
		s.list = slices.Clone(s.list)
	}
}

// len is how many messages are held.
func (s *heldSet) len() int { return len(s.list) }

// all lists the held messages, so callers may remove while they go.
func (s *heldSet) all() []*tracked { return slices.Clone(s.list) }
