package batch

import (
	"container/heap"
	"time"
)

// A user's batch is due when it is full, when its wait has passed since its
// first pending site (waiting, by that time), when a handed-back batch's
// notBefore has passed (retries), or when the caller makes it due (the
// due queue, in order).

type deadline struct {
	key string
	at  int64 // Unix nanoseconds
}

// deadlines is a min-heap by at. A user may have stale entries (its time
// moved, or it was taken meanwhile); they are dropped when popped.
type deadlines []deadline

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].at < d[j].at }
func (d deadlines) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *deadlines) Push(x any)        { *d = append(*d, x.(deadline)) }
func (d *deadlines) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}

// SetWait changes how long a partial batch waits for more sites from its
// first pending site: the linger normally, longer while a backlog is still
// arriving (more sites for the same users are on their way), zero once
// nothing more is coming. It applies to every batch pending, at once.
func (a *Aggregator[M]) SetWait(d time.Duration) { a.wait = d }

// Wait is the current wait (SetWait).
func (a *Aggregator[M]) Wait() time.Duration { return a.wait }

// schedule records when u started waiting.
func (a *Aggregator[M]) schedule(key string, u *user[M]) {
	if u.since != 0 {
		heap.Push(&a.waiting, deadline{key: key, at: u.since})
	}
}

func (a *Aggregator[M]) enqueueIfFull(key string, u *user[M]) {
	if !u.inFlight && !u.queued && u.full(a.maxSites) {
		a.enqueue(key, u)
	}
}

func (a *Aggregator[M]) enqueue(key string, u *user[M]) {
	u.queued = true
	a.due = append(a.due, key)
}

// ready returns the user a waiting entry stands for if that entry is still
// current: the user has pending sites since then, and is neither queued nor
// in flight.
func (a *Aggregator[M]) ready(d deadline) *user[M] {
	a.visits++
	u := a.users[d.key]
	if u == nil || u.inFlight || u.queued || len(u.pending) == 0 || d.at != u.since {
		return nil
	}
	return u
}

// Next takes the next due batch, marking its user in flight, or reports
// false when none is due at now.
func (a *Aggregator[M]) Next(now time.Time) (*Batch[M], bool) {
	at := now.UnixNano()
	cutoff := at - int64(a.wait)
	for len(a.waiting) > 0 && a.waiting[0].at <= cutoff {
		d := heap.Pop(&a.waiting).(deadline)
		if u := a.ready(d); u != nil {
			a.enqueue(d.key, u)
		}
	}
	for len(a.retries) > 0 && a.retries[0].at <= at {
		d := heap.Pop(&a.retries).(deadline)
		a.visits++
		if u := a.users[d.key]; u != nil && !u.inFlight && !u.queued && len(u.pending) > 0 && d.at == u.notBefore {
			a.enqueue(d.key, u)
		}
	}
	for len(a.due) > 0 {
		key := a.due[0]
		a.due[0] = ""
		a.due = a.due[1:]
		a.visits++
		u := a.users[key]
		if u == nil {
			continue
		}
		u.queued = false
		if u.inFlight || len(u.pending) == 0 {
			continue
		}
		if at < u.notBefore {
			// Handed back: due again at notBefore.
			heap.Push(&a.retries, deadline{key: key, at: u.notBefore})
			continue
		}
		return a.take(key, u), true
	}
	return nil, false
}

// FlushOldest makes up to n of the batches that have waited longest due now,
// whatever the wait, and reports how many it made due: when the caller can
// hold no more, the oldest go first.
func (a *Aggregator[M]) FlushOldest(n int) int {
	k := 0
	for k < n && len(a.waiting) > 0 {
		d := heap.Pop(&a.waiting).(deadline)
		if u := a.ready(d); u != nil {
			a.enqueue(d.key, u)
			k++
		}
	}
	return k
}

// Deadline reports when the oldest pending batch becomes due, for the
// caller's timer; false when nothing waits on time. It may report a time
// already past for a batch taken since: Next then drops it.
func (a *Aggregator[M]) Deadline() (time.Time, bool) {
	var at int64
	ok := false
	if len(a.waiting) > 0 {
		at, ok = a.waiting[0].at+int64(a.wait), true
	}
	if len(a.retries) > 0 && (!ok || a.retries[0].at < at) {
		at, ok = a.retries[0].at, true
	}
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, at), true
}

// FlushAll makes every pending batch due now, for shutdown.
func (a *Aggregator[M]) FlushAll() {
	for key, u := range a.users {
		a.visits++
		if !u.inFlight && !u.queued && len(u.pending) > 0 {
			a.enqueue(key, u)
		}
	}
}

// Visits counts users examined so far (by Next, FlushOldest and FlushAll):
// work per batch taken, or a scan per call, tells itself apart here.
func (a *Aggregator[M]) Visits() uint64 { return a.visits }
