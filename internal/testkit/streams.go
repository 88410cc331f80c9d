package testkit

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/bench"
	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/provision"
)

// Names the consumer uses by default.
const (
	RequestStream    = "SITEFOLLOW"
	DeadLetterStream = "SITEFOLLOW_DLQ"
	ConsumerName     = "sitefollow"
	// Subject is where testkit publishes requests.
	Subject = "sitefollow.requests.test"
)

// Spec is the provisioning spec a consumer builds from settings (the same
// map given to ConsumerEnv), derived exactly as the consumer derives it.
func Spec(t testing.TB, settings map[string]string) provision.Spec {
	t.Helper()
	env := map[string]string{"AZURE_TENANT_ID": "sim-tenant", "AZURE_CLIENT_ID": "sim-client", "AZURE_CLIENT_SECRET": "sim-secret"}
	maps.Copy(env, settings)
	cfg, err := config.Load(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("consumer settings: %v", err)
	}
	return provision.SpecFrom(cfg)
}

// PrecreateStreams creates what the consumer needs before any consumer runs
// (for SITEFOLLOW_PROVISION=false), from spec, with replicas replicas: the
// request stream, the dead-letter stream, the state bucket and the durable
// consumer. It is the
// one place a test creates them, so that whatever else the consumer comes to
// need is created here too. Leader elections in a fresh cluster are retried.
func PrecreateStreams(t testing.TB, js jetstream.JetStream, spec provision.Spec, replicas int) {
	t.Helper()
	req, dead, cons := spec.RequestStream(), spec.DeadLetterStream(), spec.ConsumerConfig()
	req.Replicas, dead.Replicas, cons.Replicas = replicas, replicas, replicas
	var last error
	if !poll(2*time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, last = js.CreateOrUpdateStream(ctx, req); last != nil {
			return false
		}
		if _, last = js.CreateOrUpdateStream(ctx, dead); last != nil {
			return false
		}
		bucket := spec.StateBucketConfig()
		bucket.Replicas = replicas
		if _, last = js.CreateOrUpdateKeyValue(ctx, bucket); last != nil {
			return false
		}
		_, last = js.CreateOrUpdateConsumer(ctx, spec.Stream, cons)
		return last == nil
	}) {
		t.Fatalf("pre-create streams: %v", last)
	}
}

// RequestBody is a request event as producers publish it.
func RequestBody(user string, action event.Action, sites ...string) []byte {
	b, err := json.Marshal(event.Request{UserID: user, Action: action, SiteIDs: sites})
	if err != nil {
		panic("testkit: encode request: " + err.Error())
	}
	return b
}

// Publish publishes a request to Subject through JetStream and returns its
// stream sequence.
func Publish(t testing.TB, js jetstream.JetStream, user string, action event.Action, sites ...string) uint64 {
	t.Helper()
	return PublishBody(t, js, RequestBody(user, action, sites...))
}

// PublishBody publishes body to Subject and returns its stream sequence.
// Publishing is retried while a cluster elects a leader.
func PublishBody(t testing.TB, js jetstream.JetStream, body []byte) uint64 {
	t.Helper()
	var seq uint64
	var last error
	// One Nats-Msg-Id across retries: a retry after a lost PubAck is
	// dropped as a duplicate and answers the original sequence.
	id := uuid.NewString()
	if !poll(time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ack, err := js.Publish(ctx, Subject, body, jetstream.WithMsgID(id))
		if err != nil {
			last = err
			return false
		}
		seq = ack.Sequence
		return true
	}) {
		t.Fatalf("publish: %v", last)
	}
	return seq
}

// PublishAll publishes bodies in order with asynchronous JetStream publishes
// (as fast as PubAcks come back) and returns each one's stream sequence.
func PublishAll(t testing.TB, js jetstream.JetStream, bodies [][]byte) []uint64 {
	t.Helper()
	futures := make([]jetstream.PubAckFuture, len(bodies))
	for i, b := range bodies {
		f, err := js.PublishAsync(Subject, b)
		if err != nil {
			t.Fatalf("publish %d of %d: %v", i, len(bodies), err)
		}
		futures[i] = f
	}
	seqs := make([]uint64, len(bodies))
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			seqs[i] = ack.Sequence
		case err := <-f.Err():
			t.Fatalf("publish %d of %d: %v", i, len(bodies), err)
		case <-time.After(time.Minute):
			t.Fatalf("publish %d of %d: no PubAck after a minute", i, len(bodies))
		}
	}
	return seqs
}

// StreamMsgs is the number of messages in stream, or ^0 when it cannot be
// read (no stream, no leader).
func StreamMsgs(js jetstream.JetStream, stream string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return ^uint64(0)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return ^uint64(0)
	}
	return info.State.Msgs
}

// DeadLetters returns every stored dead letter, in stream order.
func DeadLetters(t testing.TB, js jetstream.JetStream) []dlq.Stored {
	t.Helper()
	var letters []dlq.Stored
	var last error
	if !poll(time.Minute, func() bool {
		letters, last = dlq.List(context.Background(), js, DeadLetterStream)
		return last == nil
	}) {
		t.Fatalf("dead letters: %v", last)
	}
	return letters
}

// DeadLetterMessages returns every message in the dead-letter stream as
// stored, headers included, in stream order.
func DeadLetterMessages(t testing.TB, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	return StreamMessages(t, js, DeadLetterStream)
}

// StreamMessages returns every message in stream as stored, headers
// included, in stream order.
func StreamMessages(t testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("stream %s message %d: %v", stream, seq, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// ConsumerInfo is the durable consumer's info, nil when it cannot be read.
func ConsumerInfo(js jetstream.JetStream) *jetstream.ConsumerInfo {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, RequestStream, ConsumerName)
	if err != nil {
		return nil
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil
	}
	return info
}

// WaitPulling waits until the durable consumer has at least n pull requests
// waiting: with one outstanding pull request per consumer process, n
// processes are pulling.
func WaitPulling(t testing.TB, js jetstream.JetStream, n int) {
	t.Helper()
	Eventually(t, 2*time.Minute, strconv.Itoa(n)+" pull requests waiting", func() bool {
		info := ConsumerInfo(js)
		return info != nil && info.NumWaiting >= n
	})
}

// Acks watches the acknowledgements consumers send, from outside: each is a
// core NATS publish to the message's $JS.ACK reply subject.
type Acks struct {
	stream, consumer string
	sub              *nats.Subscription

	mu        sync.Mutex
	delivered map[uint64]uint64 // stream sequence → highest delivery count seen
	nakked    map[uint64]int    // stream sequence → NAKs seen
	acked     map[uint64]bool   // stream sequence → acknowledged
	maxSeen   uint64
	acks      int
	naks      int
	progress  int
}

// WatchAcks subscribes on nc to every ack for consumer on stream, until the
// test ends.
func WatchAcks(t testing.TB, nc *nats.Conn, stream, consumer string) *Acks {
	t.Helper()
	a := &Acks{stream: stream, consumer: consumer, delivered: make(map[uint64]uint64),
		nakked: make(map[uint64]int), acked: make(map[uint64]bool)}
	sub, err := nc.Subscribe("$JS.ACK.>", a.record)
	if err != nil {
		t.Fatalf("watch acks: %v", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatalf("watch acks: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("watch acks: %v", err)
	}
	a.sub = sub
	t.Cleanup(func() {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			t.Logf("stop watching acks: %v", err)
		}
	})
	return a
}

// record reads an ack subject ($JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.…).
func (a *Acks) record(m *nats.Msg) {
	r, err := bench.ParseAckSubject(m.Subject)
	if err != nil || r.Stream != a.stream || r.Consumer != a.consumer {
		return
	}
	delivered, seq := r.Delivered, r.StreamSeq
	a.mu.Lock()
	defer a.mu.Unlock()
	a.delivered[seq] = max(a.delivered[seq], delivered)
	a.maxSeen = max(a.maxSeen, delivered)
	switch body := string(m.Data); {
	case strings.HasPrefix(body, "-NAK"):
		a.naks++
		a.nakked[seq]++
	case strings.HasPrefix(body, "+WPI"):
		a.progress++
	case body == "", strings.HasPrefix(body, "+ACK"):
		a.acks++
		a.acked[seq] = true
	}
}

// MaxDelivered is the highest delivery count any ack, NAK or progress
// message carried.
func (a *Acks) MaxDelivered() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.maxSeen
}

// Delivered is the highest delivery count seen for stream sequence seq.
func (a *Acks) Delivered(seq uint64) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.delivered[seq]
}

// Naks is the number of NAKs seen for stream sequence seq.
func (a *Acks) Naks(seq uint64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nakked[seq]
}

// Acked reports whether stream sequence seq was acknowledged.
func (a *Acks) Acked(seq uint64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.acked[seq]
}

// Counts are the acks, NAKs and in-progress messages seen.
func (a *Acks) Counts() (acks, naks, progress int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.acks, a.naks, a.progress
}
