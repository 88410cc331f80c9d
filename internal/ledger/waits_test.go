package ledger

import (
	"testing"
	"time"
)

// TestWaitsCountDeliveriesOnce: each delivery spent waiting counts once,
// however many of the request's sites waited in it, and per request.
func TestWaitsCountDeliveriesOnce(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	l := w.ledger("a", time.Minute)
	tests := []struct {
		name     string
		seq      uint64
		delivery uint64
		want     uint64
	}{
		{name: "first wait", seq: 7, delivery: 1, want: 1},
		{name: "same delivery again", seq: 7, delivery: 1, want: 1},
		{name: "next delivery", seq: 7, delivery: 2, want: 2},
		{name: "a delivery skipped (a transient failure)", seq: 7, delivery: 4, want: 3},
		{name: "an older delivery late", seq: 7, delivery: 3, want: 3},
		{name: "another request", seq: 8, delivery: 5, want: 1},
	}
	for _, tt := range tests {
		if err := l.AddWait(ctx, tt.seq, tt.delivery, time.Hour); err != nil {
			t.Fatalf("%s: add wait: %v", tt.name, err)
		}
		got, err := l.Waits(ctx, tt.seq)
		if err != nil {
			t.Fatalf("%s: waits: %v", tt.name, err)
		}
		if got != tt.want {
			t.Errorf("%s: waits of %d: got %d, want %d", tt.name, tt.seq, got, tt.want)
		}
	}
	if got, err := w.ledger("b", time.Minute).Waits(ctx, 7); err != nil || got != 3 {
		t.Errorf("another replica's view: got %d, %v; want 3, nil", got, err)
	}
	if got, err := l.Waits(ctx, 9); err != nil || got != 0 {
		t.Errorf("a request that never waited: got %d, %v; want 0, nil", got, err)
	}
}

// TestWaitsExpire: the count lives only its TTL after the last write, so
// the bucket cleans itself.
func TestWaitsExpire(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	l := w.ledger("a", time.Minute)
	if err := l.AddWait(ctx, 3, 1, time.Second); err != nil {
		t.Fatalf("add wait: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := l.Waits(ctx, 3)
		if err != nil {
			t.Fatalf("waits: %v", err)
		}
		if got == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waits: still %d long after the TTL, want 0", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := l.AddWait(ctx, 3, 2, time.Hour); err != nil {
		t.Fatalf("add wait after expiry: %v", err)
	}
	if got, err := l.Waits(ctx, 3); err != nil || got != 1 {
		t.Errorf("after expiry and a new wait: got %d, %v; want 1, nil", got, err)
	}
}

// TestWaitsOfARecreatedStreamDoNotCount: sequences start again at 1 in a
// re-created stream, so an old count must not excuse a new request.
func TestWaitsOfARecreatedStreamDoNotCount(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	if err := w.ledger("a", time.Minute).AddWait(ctx, 1, 4, time.Hour); err != nil {
		t.Fatalf("add wait: %v", err)
	}
	if err := w.js.DeleteStream(ctx, stream); err != nil {
		t.Fatal(err)
	}
	w.createStream()
	b := w.ledger("b", time.Minute)
	if got, err := b.Waits(ctx, 1); err != nil || got != 0 {
		t.Errorf("waits after the stream was re-created: got %d, %v; want 0, nil", got, err)
	}
	if err := b.AddWait(ctx, 1, 1, time.Hour); err != nil {
		t.Fatalf("add wait over the old count: %v", err)
	}
	if got, err := b.Waits(ctx, 1); err != nil || got != 1 {
		t.Errorf("waits: got %d, %v; want 1, nil", got, err)
	}
}
