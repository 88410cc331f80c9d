package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/event"
)

// subject is where the benchmark publishes requests, under the default
// stream subjects.
const subject = "sitefollow.requests.bench"

// maxPublishPending bounds the publishes awaiting their PubAck, so a large
// backlog streams into the server instead of piling up in memory.
const maxPublishPending = 4000

// sitePoolSize is how many distinct sites the simulator knows; requests are
// drawn from them.
const sitePoolSize = 200

// sitePool returns the benchmark's known site ids.
func sitePool() []string {
	ids := make([]string, sitePoolSize)
	for i := range ids {
		ids[i] = fmt.Sprintf("contoso.sharepoint.com,%08x-1d2e-4f60-8a9b-0c1d2e3f4a5b,%08x-aaaa-4bbb-8ccc-dddddddddddd", 0xb0000000+i, 0x712a0000+i)
	}
	return ids
}

// userName is the benchmark's n-th user.
func userName(n int) string { return fmt.Sprintf("user-%05d@contoso.com", n) }

// encode renders a request as producers do.
func encode(r event.Request) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return b, nil
}

// roundRobin is the i-th of a backlog spread evenly over users: request i
// goes to user i mod users, and each user's requests name distinct sites
// (while a user has at most sitePoolSize of them), so nothing is superseded
// and every request costs Graph one site.
func roundRobin(sites []string, users int) func(i int) event.Request {
	return func(i int) event.Request {
		return event.Request{
			UserID:  userName(i % users),
			Action:  event.Follow,
			SiteIDs: []string{sites[(i/users)%len(sites)]},
			Source:  "bench",
		}
	}
}

// pubLog remembers when each stream sequence was published.
type pubLog struct {
	mu sync.Mutex
	at []int64 // at[seq]: Unix nanoseconds of the publish call, 0 if unknown
	n  int
}

func (l *pubLog) set(seq uint64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for uint64(len(l.at)) <= seq {
		l.at = append(l.at, make([]int64, max(len(l.at), 1024))...)
	}
	if l.at[seq] == 0 {
		l.n++
	}
	l.at[seq] = at.UnixNano()
}

// each calls f for every published sequence, in order.
func (l *pubLog) each(f func(seq uint64, at time.Time)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for seq, ns := range l.at {
		if ns != 0 {
			f(uint64(seq), time.Unix(0, ns))
		}
	}
}

// count is how many publishes were confirmed.
func (l *pubLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// publisher publishes asynchronously with a bounded number of PubAcks
// outstanding; a collector goroutine reads each PubAck and records the
// sequence's publish time.
type publisher struct {
	js      jetstream.JetStream
	futures chan sent
	done    chan error
	cancel  context.CancelFunc
}

type sent struct {
	f  jetstream.PubAckFuture
	at time.Time
}

func newPublisher(ctx context.Context, js jetstream.JetStream, log *pubLog) *publisher {
	ctx, cancel := context.WithCancel(ctx)
	p := &publisher{js: js, futures: make(chan sent, maxPublishPending), done: make(chan error, 1), cancel: cancel}
	go func() { p.done <- collect(ctx, p.futures, log) }()
	return p
}

// collect waits for each PubAck in publish order until futures is closed or
// ctx ends, and returns the first failure.
func collect(ctx context.Context, futures <-chan sent, log *pubLog) error {
	var first error
	failed := 0
	for s := range futures {
		select {
		case ack := <-s.f.Ok():
			log.set(ack.Sequence, s.at)
		case err := <-s.f.Err():
			failed++
			if first == nil {
				first = err
			}
		case <-ctx.Done():
			return fmt.Errorf("publish: %w", ctx.Err())
		}
	}
	if first != nil {
		return fmt.Errorf("publish: %d publishes failed, first: %w", failed, first)
	}
	return nil
}

// send publishes data; it blocks while maxPublishPending PubAcks are
// outstanding.
func (p *publisher) send(ctx context.Context, data []byte) error {
	at := time.Now()
	f, err := p.js.PublishAsync(subject, data, jetstream.WithStallWait(time.Minute))
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	select {
	case p.futures <- sent{f: f, at: at}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publish: %w", ctx.Err())
	}
}

// finish waits for every outstanding PubAck and stops the collector.
func (p *publisher) finish() error {
	close(p.futures)
	err := <-p.done
	p.cancel()
	return err
}

// abort stops the collector without waiting for outstanding PubAcks. The
// caller already holds the error that made it give up; the collector's own
// (normally context.Canceled) adds nothing.
func (p *publisher) abort() {
	p.cancel()
	close(p.futures)
	<-p.done
}

// publishAll publishes n requests made by gen, as fast as the server
// confirms them, and waits for every PubAck.
func publishAll(ctx context.Context, js jetstream.JetStream, log *pubLog, n int, gen func(i int) event.Request) error {
	p := newPublisher(ctx, js, log)
	for i := range n {
		data, err := encode(gen(i))
		if err == nil {
			err = p.send(ctx, data)
		}
		if err != nil {
			p.abort()
			return err
		}
	}
	return p.finish()
}
