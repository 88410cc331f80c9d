package handler

// LoopTurns is how many turns the loop goroutine made.
func (h *Handler) LoopTurns() uint64 { return h.turns.Load() }

// AggregatorVisits is how many users the aggregator examined (see
// batch.Aggregator.Visits).
func (h *Handler) AggregatorVisits() uint64 { return h.visits.Load() }
