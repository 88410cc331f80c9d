package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/batch"
	"github.com/sitefollow/sitefollow/internal/event"
)

// fakeMsg is a JetStream delivery as the client hands it over: fresh
// strings and payload per message, metadata parsed from the reply subject.
type fakeMsg struct {
	reply, subject string
	data           []byte
	seq, pending   uint64
}

func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	tok := strings.Split(m.reply, ".")
	ts, err := strconv.ParseInt(tok[7], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("fake message: timestamp: %w", err)
	}
	meta := &jetstream.MsgMetadata{NumDelivered: 1, NumPending: m.pending, Timestamp: time.Unix(0, ts),
		Stream: tok[2], Consumer: tok[3]}
	meta.Sequence.Stream, meta.Sequence.Consumer = m.seq, m.seq
	return meta, nil
}
func (m *fakeMsg) Data() []byte                     { return m.data }
func (m *fakeMsg) Headers() nats.Header             { return nil }
func (m *fakeMsg) Subject() string                  { return m.subject }
func (m *fakeMsg) Reply() string                    { return m.reply }
func (m *fakeMsg) Ack() error                       { return nil }
func (m *fakeMsg) DoubleAck(context.Context) error  { return nil }
func (m *fakeMsg) Nak() error                       { return nil }
func (m *fakeMsg) NakWithDelay(time.Duration) error { return nil }
func (m *fakeMsg) InProgress() error                { return nil }
func (m *fakeMsg) Term() error                      { return nil }
func (m *fakeMsg) TermWithReason(string) error      { return nil }

func TestHeldMessageMemory(t *testing.T) {
	// What a held message costs, everything included (the tracked message,
	// its place in the held set, its aggregator entry and its share of the
	// user's), held as a reorganisation backlog holds them: 10,000 users,
	// each one-site request 10,000 messages from the user's next. Before
	// slimming it was 749 bytes; the intake's estimate must not undercount
	// it by much either, or HeldMemory would not bound memory.
	const n, users = 100_000, 10_000
	h := New(Config{BatchMaxSites: 20, BatchLinger: time.Second, MaxAckPending: n, AckWait: time.Minute, EventMaxSites: 100}, nil, nil, nil, zeroLogger(), nil)
	inbox := newMailbox()
	in := newIntake(n+1, 1<<40, 1<<30)
	s := &subscription{h: h, inbox: inbox, intake: in}
	l := &loop{h: h, agg: batch.New[*tracked](20, time.Second), intake: in}
	epoch := time.Now()
	pool := make([]string, 10)
	for i := range pool {
		pool[i] = fmt.Sprintf("contoso.sharepoint.com,%08x-1d2e-4f60-8a9b-0c1d2e3f4a5b,%08x-aaaa-4bbb-8ccc-dddddddddddd", 0xb0000000+i, 0x712a0000+i)
	}
	mk := func(i int) *fakeMsg {
		data, err := json.Marshal(event.Request{UserID: fmt.Sprintf("user-%05d@contoso.com", i%users), Action: event.Follow,
			SiteIDs: []string{pool[i/users]}, Source: "bench"})
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(i + 1)
		pending := uint64(n - i - 1)
		return &fakeMsg{reply: fmt.Sprintf("$JS.ACK.SITEFOLLOW.sitefollow.1.%d.%d.%d.%d", seq, seq, 1732266000000000000+seq, pending),
			subject: strings.Clone("sitefollow.requests.bench"), data: data, seq: seq, pending: pending}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var spare []delivery
	for i := range n {
		s.receive(mk(i), epoch)
		burst := inbox.take(spare)
		for _, d := range burst {
			l.accept(d, time.Now())
		}
		spare = burst
	}
	clear(spare)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := l.held.len(); got != n {
		t.Fatalf("held: got %d, want %d", got, n)
	}
	per := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	estimate := float64(heldCost(1))
	t.Logf("%d messages held over %d users: %.0f bytes each (estimate %.0f)", n, users, per, estimate)
	if per > 250 {
		t.Errorf("bytes per held message: got %.0f, want at most 250", per)
	}
	if per > 1.25*estimate {
		t.Errorf("bytes per held message: got %.0f, want at most 1.25 × the intake's estimate %.0f", per, estimate)
	}
	runtime.KeepAlive(l)
}
