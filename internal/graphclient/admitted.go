package graphclient

import "time"

// admittedRing counts admitted calls per ringBucket over ringSpan, as a
// ring: constant memory and work per call however fast calls go. Time the
// gate kept closed counts as time: for a token bucket or a window, the
// rate over a span that includes the pauses is what the budget granted.
type admittedRing struct {
	counts   [ringSpan / ringBucket]int
	newest   int
	bucketAt time.Time
	first    time.Time
}

const (
	ringSpan   = 5 * time.Second
	ringBucket = 250 * time.Millisecond
	// ringMinSpan is the least history a rate is measured over.
	ringMinSpan = 500 * time.Millisecond
)

func (r *admittedRing) add(at time.Time) {
	r.advance(at)
	r.counts[r.newest]++
}

// mean is the admitted calls per second over the whole ring; false with
// less than ringMinSpan of history or nothing admitted.
func (r *admittedRing) mean(at time.Time) (float64, bool) {
	if r.first.IsZero() {
		return 0, false
	}
	r.advance(at)
	n := 0
	for _, c := range r.counts {
		n += c
	}
	span := min(time.Duration(len(r.counts)-1)*ringBucket+at.Sub(r.bucketAt), at.Sub(r.first))
	if span < ringMinSpan || n == 0 {
		return 0, false
	}
	return float64(n) / span.Seconds(), true
}

// silent reports whether there is a full span of history in which nothing
// was admitted.
func (r *admittedRing) silent(at time.Time) bool {
	if r.first.IsZero() || at.Sub(r.first) < ringSpan {
		return false
	}
	r.advance(at)
	for _, c := range r.counts {
		if c > 0 {
			return false
		}
	}
	return true
}

// advance moves the ring to the bucket holding now, emptying the buckets it
// passes over.
func (r *admittedRing) advance(now time.Time) {
	if r.bucketAt.IsZero() {
		r.bucketAt = now.Truncate(ringBucket)
		r.first = now
		return
	}
	steps := int(now.Sub(r.bucketAt) / ringBucket)
	for i := range min(steps, len(r.counts)) {
		r.counts[(r.newest+1+i)%len(r.counts)] = 0
	}
	if steps > 0 {
		r.newest = (r.newest + steps) % len(r.counts)
		r.bucketAt = r.bucketAt.Add(time.Duration(steps) * ringBucket)
	}
}
