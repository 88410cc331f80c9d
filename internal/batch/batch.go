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
//     losing request is settled together with the winner.
//   - At most one batch per user is in flight; requests arriving meanwhile
//     wait for the next one.
//   - A message (ticket) is done only when every one of its sites is settled.
//   - A request sent back for redelivery cannot overtake a newer one for the
//     same (user, site) that was settled meanwhile: when it comes back it is
//     skipped, as superseded.
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

// Item is one (site, action) of a batch. The caller sets Retry when the site
// was not settled (a transient failure, or a dead-letter that could not be
// published) before handing the batch back to Complete.
type Item[M any] struct {
	Site   string
	Action event.Action
	Ticket *Ticket[M]
	Retry  bool
	// Skip is set when a newer request for the same site was settled
	// after this one had been sent back for redelivery: sending it now
	// would undo the newer one. The caller does not send it; it settles as
	// superseded.
	Skip bool

	siteKey    string
	superseded []*Ticket[M]
}

// Batch is everything one user has pending, taken in one go.
type Batch[M any] struct {
	UserID string
	Items  []Item[M]

	key string
}

// Calls splits the batch into Graph calls of at most max sites, one action
// per call, follows first.
func (b *Batch[M]) Calls(max int) [][]*Item[M] {
	var calls [][]*Item[M]
	for _, action := range []event.Action{event.Follow, event.Unfollow} {
		var cur []*Item[M]
		for i := range b.Items {
			if b.Items[i].Action != action || b.Items[i].Skip {
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
	seq        uint64
	ticket     *Ticket[M]
	superseded []*Ticket[M]
}

type user[M any] struct {
	id       string
	pending  map[string]*entry[M]
	since    time.Time
	inFlight bool
	queued   bool
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

type deadline struct {
	key   string
	since time.Time
}

// deadlines is a min-heap by since. Mostly sites arrive in time order, but a
// batch that leaves sites behind (more than fit one call) puts back an older
// first-pending time.
type deadlines []deadline

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].since.Before(d[j].since) }
func (d deadlines) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *deadlines) Push(x any)        { *d = append(*d, x.(deadline)) }
func (d *deadlines) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}

// guard remembers, for one (user, site), the newest request sent back for
// redelivery and the newest request settled since.
type guard struct {
	retried, settled uint64
}

// maxGuards bounds the memory guards take; past it half are forgotten,
// which only reopens the (rare) race they close.
const maxGuards = 100_000

// Aggregator holds pending work for all users. It is not safe for concurrent
// use: one goroutine owns it.
type Aggregator[M any] struct {
	maxSites  int
	linger    time.Duration
	users     map[string]*user[M]
	guards    map[string]*guard
	deadlines deadlines
	due       []string
	sites     int
	inFlight  int
}

// New returns an Aggregator flushing a user at maxSites pending sites or
// linger after the first one.
func New[M any](maxSites int, linger time.Duration) *Aggregator[M] {
	return &Aggregator[M]{maxSites: maxSites, linger: linger, users: make(map[string]*user[M]), guards: make(map[string]*guard)}
}

// Add records a request and returns its ticket. seq orders requests for the
// same (user, site): the higher one wins.
func (a *Aggregator[M]) Add(userID string, action event.Action, sites []string, seq uint64, msg M, now time.Time) *Ticket[M] {
	t := &Ticket[M]{Msg: msg, Seq: seq, open: len(sites)}
	key := event.UserKey(userID)
	u := a.users[key]
	if u == nil {
		u = &user[M]{id: userID, pending: make(map[string]*entry[M])}
		a.users[key] = u
	}
	if len(u.pending) == 0 {
		u.since = now
		heap.Push(&a.deadlines, deadline{key: key, since: now})
	}
	for _, site := range sites {
		sk := event.SiteKey(site)
		old := u.pending[sk]
		switch {
		case old == nil:
			u.pending[sk] = &entry[M]{at: now, key: sk, site: site, action: action, seq: seq, ticket: t}
			u.perAction[actionIndex(action)]++
			a.sites++
		case seq > old.seq:
			u.perAction[actionIndex(old.action)]--
			u.perAction[actionIndex(action)]++
			// The winner keeps the loser's place in time: the user has been
			// waiting for this site since the first request.
			u.pending[sk] = &entry[M]{at: old.at, key: sk, site: site, action: action, seq: seq, ticket: t,
				superseded: append(old.superseded, old.ticket)}
		default:
			old.superseded = append(old.superseded, t)
		}
	}
	if !u.inFlight && !u.queued && u.full(a.maxSites) {
		a.enqueue(key, u)
	}
	return t
}

func (a *Aggregator[M]) enqueue(key string, u *user[M]) {
	u.queued = true
	a.due = append(a.due, key)
}

// Next takes the next due batch, marking its user in flight, or reports
// false when none is due at now.
func (a *Aggregator[M]) Next(now time.Time) (*Batch[M], bool) {
	for len(a.deadlines) > 0 && !now.Before(a.deadlines[0].since.Add(a.linger)) {
		d := heap.Pop(&a.deadlines).(deadline)
		u := a.users[d.key]
		if u != nil && !u.inFlight && !u.queued && len(u.pending) > 0 && u.since.Equal(d.since) {
			a.enqueue(d.key, u)
		}
	}
	for len(a.due) > 0 {
		key := a.due[0]
		a.due = a.due[1:]
		u := a.users[key]
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
		return cmp.Or(cmp.Compare(x.seq, y.seq), cmp.Compare(x.site, y.site))
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
		skip := false
		if len(a.guards) > 0 {
			g := a.guards[pairKey(key, e.key)]
			skip = g != nil && g.settled > e.seq
		}
		b.Items = append(b.Items, Item[M]{Site: e.site, Action: e.action, Ticket: e.ticket, superseded: e.superseded,
			siteKey: e.key, Skip: skip})
		delete(u.pending, e.key)
		u.perAction[actionIndex(e.action)]--
	}
	a.sites -= len(b.Items)
	u.since = since
	if !since.IsZero() {
		heap.Push(&a.deadlines, deadline{key: key, since: since})
	}
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
	return a.deadlines[0].since.Add(a.linger), true
}

// Complete hands a batch back after its Graph calls, with Retry set on the
// items that were not settled, and returns the messages that are now done.
// A superseded request is settled with its winner, whatever the winner's
// fate: the winner's own message carries the newer intent onward.
func (a *Aggregator[M]) Complete(b *Batch[M], now time.Time) []Done[M] {
	var done []Done[M]
	settle := func(t *Ticket[M], retry bool) {
		t.retry = t.retry || retry
		t.open--
		if t.open == 0 {
			done = append(done, Done[M]{Msg: t.Msg, Retry: t.retry})
		}
	}
	for i := range b.Items {
		it := &b.Items[i]
		retry := it.Retry && !it.Skip
		if retry || len(a.guards) > 0 {
			a.watch(pairKey(b.key, it.siteKey), it.Ticket.Seq, retry)
		}
		settle(it.Ticket, retry)
		for _, t := range it.superseded {
			settle(t, false)
		}
	}
	u := a.users[b.key]
	u.inFlight = false
	a.inFlight--
	switch {
	case len(u.pending) == 0:
		delete(a.users, b.key)
	case u.full(a.maxSites) || !now.Before(u.since.Add(a.linger)):
		a.enqueue(b.key, u)
	}
	return done
}

func pairKey(userKey, siteKey string) string { return userKey + "\x00" + siteKey }

// watch keeps the guard of a pair: a request sent back for redelivery
// opens it, newer requests settled meanwhile raise its mark, and the
// returning request itself, settled or skipped, closes it.
func (a *Aggregator[M]) watch(pair string, seq uint64, retry bool) {
	g := a.guards[pair]
	switch {
	case retry:
		if g == nil {
			a.evictGuards()
			g = &guard{}
			a.guards[pair] = g
		}
		g.retried = max(g.retried, seq)
	case g == nil:
	case seq > g.retried:
		g.settled = max(g.settled, seq)
	case seq == g.retried:
		delete(a.guards, pair)
	}
}

// evictGuards forgets an arbitrary half of the guards when there are too
// many (a long Graph outage sends back a great many requests).
func (a *Aggregator[M]) evictGuards() {
	if len(a.guards) < maxGuards {
		return
	}
	n := len(a.guards) / 2
	for k := range a.guards {
		if n == 0 {
			break
		}
		delete(a.guards, k)
		n--
	}
}

// FlushAll makes every pending batch due now, for shutdown.
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
