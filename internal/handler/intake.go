package handler

import (
	"math"
	"sync"
	"time"
)

// intake bounds how many messages this process holds: delivered to it and
// not yet settled. The Consume callback takes a slot per message and blocks
// while none is free; the loop frees a slot as each message settles. While
// the callback blocks the client stops pulling, so messages this process
// could not send soon stay with the server for other replicas, and those
// the client had already buffered go back to the server after AckWait.
//
// The bound follows the Graph pace: unlimited pace allows MaxAckPending,
// a throttled one only what it can send within the intake horizon.
//
// It also bounds the bytes of payloads held (only invalid events keep
// theirs, until their dead letters are stored), so memory follows bytes as
// well as counts: one payload is always let in, however large.
type intake struct {
	mu        sync.Mutex
	cond      *sync.Cond
	used      int
	limit     int
	bytes     int
	byteLimit int
	closed    bool
}

func newIntake(limit, byteLimit int) *intake {
	in := &intake{limit: limit, byteLimit: byteLimit}
	in.cond = sync.NewCond(&in.mu)
	return in
}

// take waits for a free slot; false means the intake closed (shutdown) and
// the message goes in without one, to be flushed.
func (in *intake) take() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for in.used >= in.limit && !in.closed {
		in.cond.Wait()
	}
	in.used++
	return !in.closed
}

// takeBytes waits until n more payload bytes may be held.
func (in *intake) takeBytes(n int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for in.bytes > 0 && in.bytes+n > in.byteLimit && !in.closed {
		in.cond.Wait()
	}
	in.bytes += n
}

// give frees n slots and the payload bytes they held.
func (in *intake) give(n, bytes int) {
	in.mu.Lock()
	in.used = max(in.used-n, 0)
	in.bytes = max(in.bytes-bytes, 0)
	in.mu.Unlock()
	in.cond.Broadcast()
}

// setLimit changes the bound; waiting callbacks re-check it.
func (in *intake) setLimit(n int) {
	in.mu.Lock()
	changed := n != in.limit
	in.limit = n
	in.mu.Unlock()
	if changed {
		in.cond.Broadcast()
	}
}

// bound is the current limit.
func (in *intake) bound() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.limit
}

// close releases every waiting callback for good.
func (in *intake) close() {
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
	in.cond.Broadcast()
}

// intakeHorizon is how far ahead a throttled process holds work: what its
// pace sends within this time, so a batch still gathers sites for a while
// but nothing waits here for minutes while other replicas could send it.
func (h *Handler) intakeHorizon() time.Duration { return h.cfg.AckWait / 2 }

// intakeLimit is the bound for the current Graph pace (calls per second).
func (h *Handler) intakeLimit(pace float64) int {
	most := h.cfg.MaxAckPending
	if pace <= 0 || math.IsInf(pace, 1) {
		return most
	}
	soon := pace * float64(h.cfg.BatchMaxSites) * h.intakeHorizon().Seconds()
	least := 4 * h.cfg.BatchMaxSites
	return int(min(max(soon, float64(least)), float64(most)))
}
