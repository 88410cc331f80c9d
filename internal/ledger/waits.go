package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Waits are the deliveries of a request spent waiting for its user to
// become visible to Graph (a new account, see handler's new-user window)
// rather than on failures: each such NAK counts as a delivery for
// JetStream, so the handler subtracts them before judging a request's last
// delivery. They are kept per request message in the ledger's bucket, key
// waits.<stream sequence>, with a per-key TTL so they clean themselves up.

// waitRecord is what a waits key holds.
type waitRecord struct {
	// Epoch is the request stream's incarnation (as in record): a count
	// for a sequence of a stream since re-created is someone else's.
	Epoch string `json:"epoch"`
	Waits uint64 `json:"waits"`
	// Delivery is the latest delivery counted, so counting one delivery
	// twice (another site of the same request) changes nothing.
	Delivery uint64 `json:"delivery"`
}

// waitKey is the key of request seq's wait count.
func waitKey(seq uint64) string { return "waits." + strconv.FormatUint(seq, 10) }

// maxWaitWrites bounds the compare-and-set attempts of AddWait: only a
// redelivery racing this one writes the same key.
const maxWaitWrites = 3

// AddWait records that delivery (JetStream's delivery count) of the request
// with stream sequence seq was spent waiting, and keeps the count for ttl
// after this write. A delivery already counted is not counted again.
func (l *Ledger) AddWait(ctx context.Context, seq, delivery uint64, ttl time.Duration) error {
	for range maxWaitWrites {
		w, rev, err := l.readWaits(ctx, seq)
		if err != nil {
			return fmt.Errorf("ledger: add wait for request %d: %w", seq, err)
		}
		if w.Delivery >= delivery {
			return nil
		}
		w.Waits++
		w.Delivery = delivery
		value, err := json.Marshal(w)
		if err != nil {
			return fmt.Errorf("ledger: add wait for request %d: %w", seq, err)
		}
		_, err = l.write(ctx, waitKey(seq), value, rev, ttl)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, ErrLost):
			return fmt.Errorf("ledger: add wait for request %d: %w", seq, err)
		}
		// Written meanwhile: read it again.
	}
	return fmt.Errorf("ledger: add wait for request %d: %w", seq, ErrLost)
}

// Waits returns how many deliveries of the request with stream sequence
// seq were spent waiting (see AddWait); 0 when none were recorded or the
// count expired.
func (l *Ledger) Waits(ctx context.Context, seq uint64) (uint64, error) {
	w, _, err := l.readWaits(ctx, seq)
	if err != nil {
		return 0, fmt.Errorf("ledger: read waits of request %d: %w", seq, err)
	}
	return w.Waits, nil
}

// readWaits reads request seq's count and its revision (0: none). A count
// of another incarnation of the stream, or one that does not decode, is
// none: the worst it can do is spend deliveries, never lose a request.
func (l *Ledger) readWaits(ctx context.Context, seq uint64) (waitRecord, uint64, error) {
	_, epoch := l.view(ctx)
	fresh := waitRecord{Epoch: epoch}
	e, err := l.kv.Get(ctx, waitKey(seq))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return fresh, 0, nil
	case err != nil:
		return waitRecord{}, 0, err
	}
	var w waitRecord
	if json.Unmarshal(e.Value(), &w) != nil || w.Epoch != epoch {
		return fresh, e.Revision(), nil
	}
	return w, e.Revision(), nil
}
