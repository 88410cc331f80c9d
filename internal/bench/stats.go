package bench

import (
	"math"
	"slices"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of
// sorted: the smallest value at least p% of the samples do not exceed. It is
// 0 for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// sortedDurations returns a sorted copy of ds.
func sortedDurations(ds []time.Duration) []time.Duration {
	out := slices.Clone(ds)
	slices.Sort(out)
	return out
}

// idealCalls is the fewest Graph calls that can apply reqs with at most
// batch sites per call: for each user and action, the distinct sites divided
// by the batch size, rounded up. Users and sites compare the way the
// consumer compares them (case-insensitively).
func idealCalls(reqs []event.Request, batch int) int {
	type key struct {
		user   string
		action event.Action
	}
	sites := make(map[key]map[string]bool)
	for _, r := range reqs {
		k := key{event.UserKey(r.UserID), r.Action}
		set := sites[k]
		if set == nil {
			set = make(map[string]bool)
			sites[k] = set
		}
		for _, s := range r.SiteIDs {
			set[event.SiteKey(s)] = true
		}
	}
	calls := 0
	for _, set := range sites {
		calls += (len(set) + batch - 1) / batch
	}
	return calls
}

// rate is events per second over the span between the first and the last
// of n events: n-1 intervals. It is 0 when it cannot be measured.
func rate(n int, first, last time.Time) float64 {
	span := last.Sub(first)
	if n < 2 || span <= 0 {
		return 0
	}
	return float64(n-1) / span.Seconds()
}

// earlyAfterAnswer counts calls that arrived before a Retry-After deadline
// the client had already been told: more than margin after a 429 (or a
// budget's throttling 503) was written, and before the deadline it
// announced. The simulator's own count (graphsim.Server.EarlyCalls) also
// includes calls that were already on their way when the 429 went out,
// which no client can avoid while it has several calls in flight; this
// count excludes them. margin covers
// the answer's trip to the client and the client noting it. calls must be
// in arrival order, as Calls returns them.
func earlyAfterAnswer(calls []graphsim.Call, margin time.Duration) int {
	type answer struct{ known, deadline time.Time }
	var answers []answer
	for _, c := range calls {
		// Only throttling answers with a Retry-After announce a deadline
		// (a 429, or a budget's 503).
		if !c.NotBefore.IsZero() {
			answers = append(answers, answer{known: c.Answered.Add(margin), deadline: c.NotBefore})
		}
	}
	// Answers complete out of arrival order; the scan below needs them by
	// the time the client could know them.
	slices.SortFunc(answers, func(a, b answer) int { return a.known.Compare(b.known) })
	early, next := 0, 0
	var deadline time.Time
	for _, c := range calls {
		for next < len(answers) && !answers[next].known.After(c.At) {
			if answers[next].deadline.After(deadline) {
				deadline = answers[next].deadline
			}
			next++
		}
		if c.At.Before(deadline) {
			early++
		}
	}
	return early
}

// median is the middle of xs (the mean of the middle two for an even
// count); 0 for none. It does not reorder xs.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
