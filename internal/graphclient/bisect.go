package graphclient

import (
	"context"
	"errors"
)

// errSplit is handle's answer to a whole-call 400 for more than one site:
// something in the request is malformed, and Graph does not say what. One
// bad id would otherwise take every other site of the call down with it, so
// the call is split in halves, each sent on its own, until the 400 comes
// back for a single site, which alone is rejected with it.
var errSplit = errors.New("graphclient: whole call rejected with 400; split it")

// reasonSplit labels the retries metric for each call split in halves.
const reasonSplit = "split"

// attempt makes one round of Graph calls: one call for the sites still open,
// or one per part once a whole-call 400 has split them. A 400 splits its
// part at once and the halves are sent within the same round, so finding
// the sites behind it spends none of the attempts transient failures get:
// for k such sites among n, at most 2·k·⌈log₂ n⌉ calls more than one, and
// never more than 2n−1 calls a round even when every half is refused. A
// part answered with a transient failure is sent again, alone, next round;
// the other parts go ahead meanwhile. Each call passes admission and the
// permit on its own.
func (r *run) attempt(ctx context.Context) error {
	queue := r.nextParts()
	r.parts = r.parts[:0]
	var retry error
	for len(queue) > 0 {
		keys := queue[0]
		queue = queue[1:]
		err := r.sendPart(ctx, keys)
		var re *retryError
		switch {
		case err == nil:
		case errors.Is(err, errSplit):
			mid := len(keys) / 2
			queue = append([][]string{keys[:mid:mid], keys[mid:]}, queue...)
			r.c.metrics.retry(r.op, reasonSplit)
		case errors.As(err, &re):
			r.parts = append(r.parts, keys)
			if retry == nil {
				retry = err
			}
		default:
			// Whatever stops the run (a pause too long to wait, no token,
			// the permit refused, the context ended) holds back every open
			// site, not only this call's.
			r.spread(keys)
			return err
		}
	}
	return retry
}

// nextParts is what the next round sends: every part still holding open
// sites, only those, or all open sites in one call before any split.
func (r *run) nextParts() [][]string {
	if r.parts == nil {
		if keys := r.pending(); len(keys) > 0 {
			return [][]string{keys}
		}
		return nil
	}
	parts := make([][]string, 0, len(r.parts))
	for _, part := range r.parts {
		open := make([]string, 0, len(part))
		for _, k := range part {
			if !r.sites[k].settled {
				open = append(open, k)
			}
		}
		if len(open) > 0 {
			parts = append(parts, open)
		}
	}
	return parts
}

// spread gives every open site outside keys the reason keys' call stopped
// the run with, so none is left with a stale reason, or none.
func (r *run) spread(keys []string) {
	if len(keys) == 0 {
		return
	}
	e := r.sites[keys[0]].lastErr
	if e == nil {
		return
	}
	for _, k := range r.pending() {
		r.sites[k].lastErr = e
	}
}
