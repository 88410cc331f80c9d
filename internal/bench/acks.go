package bench

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// errAckSubject classifies reply subjects that are not JetStream ack subjects.
var errAckSubject = errors.New("not a JetStream ack subject")

// AckReply is what a JetStream ack subject says about the message it settles.
type AckReply struct {
	Stream, Consumer string
	Delivered        uint64 // delivery count of the message
	StreamSeq        uint64
	ConsumerSeq      uint64
}

// ParseAckSubject reads a message's ack subject, in either server format:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
//	$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>…]
//
// The second form has at least 11 tokens; like nats.go, trailing tokens are
// tolerated because the server may add more.
func ParseAckSubject(subject string) (AckReply, error) {
	tokens := strings.Split(subject, ".")
	if len(tokens) < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
		return AckReply{}, fmt.Errorf("parse %q: %w", subject, errAckSubject)
	}
	off := 2
	switch {
	case len(tokens) == 9:
	case len(tokens) >= 11:
		off = 4
	default:
		return AckReply{}, fmt.Errorf("parse %q: %d tokens: %w", subject, len(tokens), errAckSubject)
	}
	var nums [3]uint64
	for i := range nums {
		n, err := strconv.ParseUint(tokens[off+2+i], 10, 64)
		if err != nil {
			return AckReply{}, fmt.Errorf("parse %q: %w: %w", subject, errAckSubject, err)
		}
		nums[i] = n
	}
	return AckReply{
		Stream:      tokens[off],
		Consumer:    tokens[off+1],
		Delivered:   nums[0],
		StreamSeq:   nums[1],
		ConsumerSeq: nums[2],
	}, nil
}

// ackKind is what an ack message asks of the server.
type ackKind int

const (
	kindAck      ackKind = iota // +ACK, +NXT or an empty body
	kindNak                     // -NAK, with or without a delay
	kindProgress                // +WPI
	kindTerm                    // +TERM
	kindOther
)

// parseAckKind classifies an ack message by its body.
func parseAckKind(body []byte) ackKind {
	switch {
	case len(body) == 0, bytes.HasPrefix(body, []byte("+ACK")), bytes.HasPrefix(body, []byte("+NXT")):
		return kindAck
	case bytes.HasPrefix(body, []byte("-NAK")):
		return kindNak
	case bytes.HasPrefix(body, []byte("+WPI")):
		return kindProgress
	case bytes.HasPrefix(body, []byte("+TERM")):
		return kindTerm
	default:
		return kindOther
	}
}

// ackCounts are the ack messages seen, by kind.
type ackCounts struct {
	Acks, Naks, Progress, Terms, Other, Unparsed int
	// Distinct is the number of stream sequences acknowledged at least once.
	Distinct int
	// First and Last are when the first and the last +ACK arrived.
	First, Last time.Time
}

// ackLog watches the acks a consumer sends, from outside the consumer: every
// ack is a core NATS publish to the message's $JS.ACK reply subject, so a
// plain subscription sees them all without the consumer's cooperation.
type ackLog struct {
	stream, consumer string
	sub              *nats.Subscription

	mu     sync.Mutex
	counts ackCounts
	// ackAt[seq] is when stream sequence seq was first acknowledged (Unix
	// nanoseconds, 0 when not yet). Streams here are fresh, so sequences are
	// dense from 1.
	ackAt []int64
}

// watchAcks subscribes on nc to every ack for consumer on stream. The
// subscription buffers without limit so a burst never drops an ack; dropped
// reports if it did anyway.
func watchAcks(nc *nats.Conn, stream, consumer string) (*ackLog, error) {
	l := &ackLog{stream: stream, consumer: consumer}
	sub, err := nc.Subscribe("$JS.ACK.>", l.record)
	if err != nil {
		return nil, fmt.Errorf("watch acks: %w", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, fmt.Errorf("watch acks: %w", err)
	}
	// The subscription must be in place at the server before anything is
	// acknowledged.
	if err := nc.Flush(); err != nil {
		return nil, fmt.Errorf("watch acks: %w", err)
	}
	l.sub = sub
	return l, nil
}

func (l *ackLog) record(m *nats.Msg) {
	now := time.Now()
	reply, err := ParseAckSubject(m.Subject)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.counts.Unparsed++
		return
	}
	if reply.Stream != l.stream || reply.Consumer != l.consumer {
		return
	}
	switch parseAckKind(m.Data) {
	case kindAck:
		l.counts.Acks++
		if l.counts.First.IsZero() {
			l.counts.First = now
		}
		l.counts.Last = now
		seq := reply.StreamSeq
		for uint64(len(l.ackAt)) <= seq {
			l.ackAt = append(l.ackAt, make([]int64, max(len(l.ackAt), 1024))...)
		}
		if l.ackAt[seq] == 0 {
			l.ackAt[seq] = now.UnixNano()
			l.counts.Distinct++
		}
	case kindNak:
		l.counts.Naks++
	case kindProgress:
		l.counts.Progress++
	case kindTerm:
		l.counts.Terms++
	default:
		l.counts.Other++
	}
}

// snapshot returns the counts so far.
func (l *ackLog) snapshot() ackCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts
}

// ackedAt returns when seq was first acknowledged.
func (l *ackLog) ackedAt(seq uint64) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq >= uint64(len(l.ackAt)) || l.ackAt[seq] == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, l.ackAt[seq]), true
}

// dropped is how many acks the client library discarded because the
// subscription fell behind; it should always be 0.
func (l *ackLog) dropped() (int, error) {
	n, err := l.sub.Dropped()
	if err != nil {
		return 0, fmt.Errorf("ack subscription: %w", err)
	}
	return n, nil
}
