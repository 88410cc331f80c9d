// Package batch gathers follow/unfollow requests per user into Graph-sized
// batches. It is pure logic: no I/O, no goroutines, and the caller passes the
// time in, so every rule can be tested without a clock.
//
// The rules:
//   - Pending work is keyed by user. A user's batch is due when it holds the
//     maximum sites per call, or when the linger time since its first pending
//     site has passed.
//   - Per (user, site) only the latest request counts, "latest" meaning the
//     highest stream sequence, so redeliveries cannot reorder intent. The
//     losing request is settled together with the winner, unless the winner
//     is dead-lettered: then the newest loser takes its place, since the
//     latest request that was not dead-lettered is the one that counts.
//   - At most one batch per user is in flight; requests arriving meanwhile
//     wait for the next one.
//   - A batch can be handed back untouched (its user is being served by
//     another replica) and is due again no sooner than the time given.
//   - A message (ticket) is done only when every one of its sites is settled.
//
// Whether a request is older than one already applied elsewhere (another
// replica, an earlier delivery, before a restart) is not known here: the
// caller checks its ledger and marks such items Skip.
package batch

import (
	"cmp"
	"container/heap"
	"slices"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
)

// Ticket tracks one request message until all of its sites are settled.
type Ticket[M any] struct {
	Msg   M
	Seq   uint64
	open  int
	retry bool
}

// Done reports a message whose sites are all settled. Retry is true when at
// least one site was not applied and must be redelivered.
type Done[M any] struct {
	Msg   M
	Retry bool
}

// Item is one (site, action) of a batch. Before handing the batch back to
// Complete the caller sets Retry when the site was not settled (a transient
// failure, or a dead letter that could not be stored) and Dead when it was
// dead-lettered.
type Item[M any] struct {
	Site   string
	Action event.Action
	Ticket *Ticket[M]
	Retry  bool
	Dead   bool
	// Skip is set by the caller when a request at least as new for the same
	// site was already applied: sending this one would undo it. A skipped
	// item is not sent and settles as superseded.
	Skip bool
	// Defer is set by the caller on an item it did not send and must try
	// again later (a newer request for the site is in doubt): it is pending
	// again, not before the batch's NotBefore.
	Defer bool

	key        string
	at         time.Time
	superseded []loser[M]
}

// Key is the site's canonical form (event.SiteKey).
func (it *Item[M]) Key() string { return it.key }

// loser is a request that a newer one for the same site overrides; it
// settles with the winner, or takes its place if the winner is dead-lettered.
type loser[M any] struct {
	ticket *Ticket[M]
	action event.Action
}

// Batch is everything one user has pending, taken in one go.
type Batch[M any] struct {
	UserID string
	Items  []Item[M]
	// NotBefore is when deferred items may be taken again.
	NotBefore time.Time

	key string
}

// Key is the user's canonical form (event.UserKey).
func (b *Batch[M]) Key() string { return b.key }

// Calls splits the batch into Graph calls of at most max sites, one action
// per call, follows first.
func (b *Batch[M]) Calls(max int) [][]*Item[M] {
	var calls [][]*Item[M]
	for _, action := range []event.Action{event.Follow, event.Unfollow} {
		var cur []*Item[M]
		for i := range b.Items {
			if b.Items[i].Action != action || b.Items[i].Skip || b.Items[i].Defer {
				continue
			}
			cur = append(cur, &b.Items[i])
			if len(cur) == max {
				calls = append(calls, cur)
				cur = nil
			}
		}
		if len(cur) > 0 {
			calls = append(calls, cur)
		}
	}
	return calls
}

type entry[M any] struct {
	at         time.Time
	key        string
	site       string
	action     event.Action
	ticket     *Ticket[M]
	superseded []loser[M]
}

func (e *entry[M]) seq() uint64 { return e.ticket.Seq }

type user[M any] struct {
	id       string
	pending  map[string]*entry[M]
	since    time.Time // first pending site's arrival; zero when none
	inFlight bool
	queued   bool
	// notBefore holds a batch handed back with Return until then.
	notBefore time.Time
	// perAction counts pending sites by action: a batch is full when one
	// action fills a call, since each action is a call of its own.
	perAction [2]int
}

func actionIndex(a event.Action) int {
	if a == event.Unfollow {
		return 1
	}
	return 0
}

func (u *user[M]) full(maxSites int) bool {
	return u.perAction[0] >= maxSites || u.perAction[1] >= maxSites
}

// due is when the user's batch becomes due by time: linger after its first
// pending site, and never before notBefore.
func (u *user[M]) due(linger time.Duration) time.Time {
	at := u.since.Add(linger)
	if u.notBefore.After(at) {
		return u.notBefore
	}
	return at
}

type deadline struct {
	key string
	at  time.Time
}

// deadlines is a min-heap by at. A user may have stale entries (its due time
// moved); Next drops those that no longer match.
type deadlines []deadline

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].at.Before(d[j].at) }
func (d deadlines) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *deadlines) Push(x any)        { *d = append(*d, x.(deadline)) }
func (d *deadlines) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}

// Aggregator holds pending work for all users. It is not safe for concurrent
// use: one goroutine owns it.
type Aggregator[M any] struct {
	maxSites  int
	linger    time.Duration
	users     map[string]*user[M]
	deadlines deadlines
	due       []string
	sites     int
	inFlight  int
}

// New returns an Aggregator flushing a user at maxSites pending sites or
// linger after the first one.
func New[M any](maxSites int, linger time.Duration) *Aggregator[M] {
	return &Aggregator[M]{maxSites: maxSites, linger: linger, users: make(map[string]*user[M])}
}

// Add records a request and returns its ticket. seq orders requests for the
// same (user, site): the higher one wins.
func (a *Aggregator[M]) Add(userID string, action event.Action, sites []string, seq uint64, msg M, now time.Time) *Ticket[M] {
	t := &Ticket[M]{Msg: msg, Seq: seq, open: len(sites)}
	key := event.UserKey(userID)
	u := a.user(key, userID)
	for _, site := range sites {
		a.put(key, u, &entry[M]{at: now, key: event.SiteKey(site), site: site, action: action, ticket: t})
	}
	a.enqueueIfFull(key, u)
	return t
}

func (a *Aggregator[M]) user(key, id string) *user[M] {
	u := a.users[key]
	if u == nil {
		u = &user[M]{id: id, pending: make(map[string]*entry[M])}
		a.users[key] = u
	}
	return u
}

// put adds e to u's pending sites, keeping the newer of e and any request
// already pending for the site; the other becomes its loser. The winner
// keeps the earlier place in time: the user has waited since the first.
func (a *Aggregator[M]) put(key string, u *user[M], e *entry[M]) {
	old := u.pending[e.key]
	switch {
	case old == nil:
		u.pending[e.key] = e
		u.perAction[actionIndex(e.action)]++
		a.sites++
	case e.seq() > old.seq():
		u.perAction[actionIndex(old.action)]--
		u.perAction[actionIndex(e.action)]++
		e.at = earlier(e.at, old.at)
		e.superseded = append(append(e.superseded, old.superseded...), loser[M]{old.ticket, old.action})
		u.pending[e.key] = e
	default:
		old.at = earlier(old.at, e.at)
		old.superseded = append(append(old.superseded, e.superseded...), loser[M]{e.ticket, e.action})
	}
	if since := u.pending[e.key].at; u.since.IsZero() || since.Before(u.since) {
		u.since = since
		a.schedule(key, u)
	}
}

func earlier(x, y time.Time) time.Time {
	if y.Before(x) {
		return y
	}
	return x
}

// schedule records when u becomes due by time.
func (a *Aggregator[M]) schedule(key string, u *user[M]) {
	if !u.since.IsZero() {
		heap.Push(&a.deadlines, deadline{key: key, at: u.due(a.linger)})
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

// Next takes the next due batch, marking its user in flight, or reports
// false when none is due at now.
func (a *Aggregator[M]) Next(now time.Time) (*Batch[M], bool) {
	for len(a.deadlines) > 0 && !now.Before(a.deadlines[0].at) {
		d := heap.Pop(&a.deadlines).(deadline)
		u := a.users[d.key]
		if u != nil && !u.inFlight && !u.queued && len(u.pending) > 0 && d.at.Equal(u.due(a.linger)) {
			a.enqueue(d.key, u)
		}
	}
	for i := 0; i < len(a.due); i++ {
		key := a.due[i]
		u := a.users[key]
		if u != nil && now.Before(u.notBefore) {
			// Handed back: its deadline entry brings it back at notBefore.
			continue
		}
		a.due = append(a.due[:i], a.due[i+1:]...)
		i--
		if u == nil {
			continue
		}
		u.queued = false
		if u.inFlight || len(u.pending) == 0 {
			continue
		}
		return a.take(key, u), true
	}
	return nil, false
}

// take moves up to one Graph call's worth of sites per action, oldest first,
// into a batch. Sites beyond that stay pending for the next batch rather than
// going out as a small extra call: when Graph throttles, calls are what is
// scarce, so each should be full.
func (a *Aggregator[M]) take(key string, u *user[M]) *Batch[M] {
	entries := make([]*entry[M], 0, len(u.pending))
	for _, e := range u.pending {
		entries = append(entries, e)
	}
	// Map order is random; sequence order keeps calls reproducible.
	slices.SortFunc(entries, func(x, y *entry[M]) int {
		return cmp.Or(cmp.Compare(x.seq(), y.seq()), cmp.Compare(x.site, y.site))
	})
	b := &Batch[M]{UserID: u.id, key: key, Items: make([]Item[M], 0, min(len(entries), 2*a.maxSites))}
	var follows, unfollows int
	var since time.Time
	for _, e := range entries {
		n := &follows
		if e.action == event.Unfollow {
			n = &unfollows
		}
		if *n == a.maxSites {
			if since.IsZero() || e.at.Before(since) {
				since = e.at
			}
			continue
		}
		*n++
		b.Items = append(b.Items, Item[M]{Site: e.site, Action: e.action, Ticket: e.ticket, superseded: e.superseded,
			key: e.key, at: e.at})
		delete(u.pending, e.key)
		u.perAction[actionIndex(e.action)]--
	}
	a.sites -= len(b.Items)
	u.since = since
	a.schedule(key, u)
	u.inFlight = true
	a.inFlight++
	return b
}

// Deadline reports when the oldest pending batch becomes due, for the
// caller's timer; false when nothing waits on time.
func (a *Aggregator[M]) Deadline() (time.Time, bool) {
	if len(a.deadlines) == 0 {
		return time.Time{}, false
	}
	return a.deadlines[0].at, true
}

// Complete hands a batch back after its Graph calls, with Retry, Dead and
// Defer set on its items, and returns the messages that are now done. A
// superseded request is settled with its winner whatever the winner's fate,
// except when the winner was dead-lettered: the newest superseded request
// is then pending again in its place, carrying the older ones.
func (a *Aggregator[M]) Complete(b *Batch[M], now time.Time) []Done[M] {
	var done []Done[M]
	settle := func(t *Ticket[M], retry bool) {
		t.retry = t.retry || retry
		t.open--
		if t.open == 0 {
			done = append(done, Done[M]{Msg: t.Msg, Retry: t.retry})
		}
	}
	u := a.users[b.key]
	deferred := false
	for i := range b.Items {
		it := &b.Items[i]
		if it.Defer {
			a.put(b.key, u, &entry[M]{at: it.at, key: it.key, site: it.Site, action: it.Action, ticket: it.Ticket, superseded: it.superseded})
			deferred = true
			continue
		}
		retry := it.Retry && !it.Skip
		settle(it.Ticket, retry)
		// A loser with the winner's own sequence is another delivery of the
		// same message (redelivered while this process still held it): it
		// shares the winner's fate, or acking it would settle the message
		// the winner sends back.
		var older []loser[M]
		for _, l := range it.superseded {
			if l.ticket.Seq == it.Ticket.Seq {
				settle(l.ticket, retry)
			} else {
				older = append(older, l)
			}
		}
		if it.Dead && len(older) > 0 {
			it.superseded = older
			a.put(b.key, u, heir(it))
			continue
		}
		for _, l := range older {
			settle(l.ticket, false)
		}
	}
	u.inFlight = false
	a.inFlight--
	if deferred {
		u.notBefore = b.NotBefore
		a.schedule(b.key, u)
	}
	switch {
	case len(u.pending) == 0:
		delete(a.users, b.key)
	case u.full(a.maxSites) || !now.Before(u.due(a.linger)):
		a.enqueue(b.key, u)
	}
	return done
}

// heir is the pending entry that replaces a dead-lettered item: its newest
// superseded request, with the rest superseded by it.
func heir[M any](it *Item[M]) *entry[M] {
	newest := 0
	for i, l := range it.superseded {
		if l.ticket.Seq > it.superseded[newest].ticket.Seq {
			newest = i
		}
	}
	l := it.superseded[newest]
	rest := slices.Delete(slices.Clone(it.superseded), newest, newest+1)
	return &entry[M]{at: it.at, key: it.key, site: it.Site, action: l.action, ticket: l.ticket, superseded: rest}
}

// Return hands back a batch that was not sent at all (another replica
// serves the user right now): its items are pending again, merged with what
// arrived meanwhile, and the user's next batch is due no sooner than
// notBefore.
func (a *Aggregator[M]) Return(b *Batch[M], notBefore time.Time) {
	u := a.users[b.key]
	for i := range b.Items {
		it := &b.Items[i]
		a.put(b.key, u, &entry[M]{at: it.at, key: it.key, site: it.Site, action: it.Action, ticket: it.Ticket, superseded: it.superseded})
	}
	u.inFlight = false
	a.inFlight--
	u.notBefore = notBefore
	a.schedule(b.key, u)
}

// Pending reports how many sites the user with canonical key waits to send
// beyond any batch in flight.
func (a *Aggregator[M]) Pending(key string) int {
	if u := a.users[key]; u != nil {
		return len(u.pending)
	}
	return 0
}

// FlushAll makes every pending batch due now, for shutdown and for a drained,
// quiet stream.
func (a *Aggregator[M]) FlushAll() {
	for key, u := range a.users {
		if !u.inFlight && !u.queued && len(u.pending) > 0 {
			a.enqueue(key, u)
		}
	}
}

// Stats reports pending sites and users in flight.
func (a *Aggregator[M]) Stats() (pendingSites, inFlightUsers int) {
	return a.sites, a.inFlight
}

// Superseded reports how many older requests for the same site this item
// overrides; they settle with it.
func (it *Item[M]) Superseded() int { return len(it.superseded) }
