package handler

import (
	"math"
	"sync"
	"time"
)

// intake bounds how much this process holds: messages delivered to it and
// not yet settled. The Consume callback takes room for each message and
// blocks while there is none; the loop gives room back as each message
// settles. While the callback blocks the client stops pulling, so messages
// this process could not hold stay with the server for other replicas, and
// those the client had already buffered go back to the server after
// AckWait.
//
// Three bounds apply:
//   - a count: MaxAckPending, or under a throttling Graph what the pace
//     sends in full calls within the held horizon (see intakeLimit);
//   - the memory of held messages, by the estimate heldCost, so a backlog
//     spread over many users fills memory, not more than HeldMemory;
//   - the payload bytes held (only invalid events keep theirs, until their
//     dead letters are stored).
//
// At least one message is always let in, however large. The window is
// full when the count is reached or a callback waits: the loop then sends
// the batches that have waited longest rather than let them wait for sites
// that cannot arrive (full).
type intake struct {
	mu        sync.Mutex
	cond      *sync.Cond
	used      int
	limit     int
	held      int
	heldLimit int
	bytes     int
	byteLimit int
	waiting   int
	closed    bool
	// fullC is signalled when the window becomes full, so a loop asleep
	// on timers wakes to make room.
	fullC chan struct{}
}

func newIntake(limit, heldLimit, byteLimit int) *intake {
	in := &intake{limit: limit, heldLimit: heldLimit, byteLimit: byteLimit, fullC: make(chan struct{}, 1)}
	in.cond = sync.NewCond(&in.mu)
	return in
}

// signal wakes the loop; the caller holds mu.
func (in *intake) signal() {
	select {
	case in.fullC <- struct{}{}:
	default:
	}
}

// wait blocks on cond as a waiting callback; the caller holds mu.
func (in *intake) wait() {
	in.waiting++
	in.signal()
	in.cond.Wait()
	in.waiting--
}

// take waits for a free slot; false means the intake closed (shutdown) and
// the message goes in without one, to be flushed.
func (in *intake) take() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for in.used >= in.limit && !in.closed {
		in.wait()
	}
	in.used++
	if in.used >= in.limit {
		in.signal()
	}
	return !in.closed
}

// takeBytes waits until a message costing held bytes of memory, payload
// of them payload kept for a dead letter, may be held.
func (in *intake) takeBytes(held, payload int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for !in.closed && ((in.held > 0 && in.held+held > in.heldLimit) || (in.bytes > 0 && in.bytes+payload > in.byteLimit)) {
		in.wait()
	}
	in.held += held
	in.bytes += payload
}

// give frees n slots and the memory and payload bytes they held.
func (in *intake) give(n, held, payload int) {
	in.mu.Lock()
	in.used = max(in.used-n, 0)
	in.held = max(in.held-held, 0)
	in.bytes = max(in.bytes-payload, 0)
	in.mu.Unlock()
	in.cond.Broadcast()
}

// full reports whether nothing more can come in until something settles.
func (in *intake) full() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.used >= in.limit || in.waiting > 0
}

// setLimit changes the count bound; waiting callbacks re-check it.
func (in *intake) setLimit(n int) {
	in.mu.Lock()
	changed := n != in.limit
	in.limit = n
	in.mu.Unlock()
	if changed {
		in.cond.Broadcast()
	}
}

// bound is the current count limit.
func (in *intake) bound() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.limit
}

// heldBytes is the memory held, by the estimate.
func (in *intake) heldBytes() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.held
}

// close releases every waiting callback for good.
func (in *intake) close() {
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
	in.cond.Broadcast()
}

// intakeLimit is the count bound for the current Graph pace (calls per
// second): what the pace sends in full calls within the held horizon, so
// a replica throttled on its own does not keep work for long that others
// could send. With one budget shared by every replica, holding more slows
// nobody, and a backlog spread over many users needs much held to make
// full calls, so the horizon is long (HeldHorizon).
func (h *Handler) intakeLimit(pace float64) int {
	most := h.cfg.MaxAckPending
	if pace <= 0 || math.IsInf(pace, 1) {
		return most
	}
	soon := pace * float64(h.cfg.BatchMaxSites) * h.cfg.HeldHorizon.Seconds()
	least := 4 * h.cfg.BatchMaxSites
	return int(min(max(soon, float64(least)), float64(most)))
}

// maxHold is the longest a partial batch waits for more sites while the
// stream still has undelivered requests (a backlog arriving): half an
// AckWait, and never less than the linger.
func (h *Handler) maxHold() time.Duration { return max(h.cfg.AckWait/2, h.cfg.BatchLinger) }
