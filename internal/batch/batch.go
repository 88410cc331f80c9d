// Package batch gathers follow/unfollow requests per user into Graph-sized
// batches. It is pure logic: no I/O, no goroutines, and the caller passes the
// time in, so every rule can be tested without a clock.
//
// The rules:
//   - Pending work is keyed by user. A user's batch is due when it holds the
//     maximum sites per call, or when the wait (SetWait; the linger unless
//     the caller says otherwise) since its first pending site has passed.
//     The caller may also make the oldest batches due early (FlushOldest).
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
//
// Memory: a pending site costs one small entry in its user's list; site
// ids are interned (unique.Make), so a site many users follow is stored
// once.
package batch

import (
	"cmp"
	"container/heap"
	"slices"
	"time"
	"unique"

	"github.com/sitefollow/sitefollow/internal/event"
)

// Ticket tracks one request message until all of its sites are settled.
// The caller may embed it in its own message type and pass it to Put, so a
// held message costs one allocation.
type Ticket[M any] struct {
	Msg    M
	Seq    uint64
	open   int32
	action uint8 // actionIndex of the request's action
	retry  bool
}

// Action is the request's action.
func (t *Ticket[M]) Action() event.Action { return actions[t.action] }

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
	keyHandle  unique.Handle[string]
	site       unique.Handle[string]
	at         int64
	superseded []*Ticket[M]
}

// Key is the site's canonical form (event.SiteKey).
func (it *Item[M]) Key() string { return it.key }

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
	for _, action := range actions {
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

// entry is one pending site, its action the ticket's. Kept small (32
// bytes) and held by value: a backlog holds hundreds of thousands.
type entry[M any] struct {
	key    unique.Handle[string] // event.SiteKey of the site
	at     int64                 // arrival, Unix nanoseconds
	ticket *Ticket[M]
	// more is what few entries need; nil nearly always.
	more *entryMore[M]
}

// entryMore is a pending site's rarer parts.
type entryMore[M any] struct {
	// site is the site as requested when it differs from its key (in case).
	site unique.Handle[string]
	// losers are the older requests for the site.
	losers []*Ticket[M]
}

func newEntry[M any](key, site unique.Handle[string], at int64, t *Ticket[M]) entry[M] {
	e := entry[M]{key: key, at: at, ticket: t}
	if site != key {
		e.more = &entryMore[M]{site: site}
	}
	return e
}

func (e *entry[M]) seq() uint64 { return e.ticket.Seq }

// site is the site as requested.
func (e *entry[M]) site() unique.Handle[string] {
	if e.more != nil && e.more.site != (unique.Handle[string]{}) {
		return e.more.site
	}
	return e.key
}

func (e *entry[M]) losers() []*Ticket[M] {
	if e.more == nil {
		return nil
	}
	return e.more.losers
}

// setLosers replaces the losers; entries are copied by value, so their
// parts are never changed in place.
func (e *entry[M]) setLosers(l []*Ticket[M]) {
	var site unique.Handle[string]
	if e.more != nil {
		site = e.more.site
	}
	e.more = nil
	if len(l) > 0 || site != (unique.Handle[string]{}) {
		e.more = &entryMore[M]{site: site, losers: l}
	}
}

// indexFrom is how many pending sites a user has before they are indexed
// by key; below it a scan is cheaper than a map and far smaller.
const indexFrom = 32

type user[M any] struct {
	id      string
	pending []entry[M]
	// index finds a pending site by key once there are many.
	index    map[unique.Handle[string]]int
	since    int64 // first pending site's arrival, Unix nanoseconds; 0 when none
	inFlight bool
	queued   bool
	// notBefore holds a batch handed back with Return until then, Unix
	// nanoseconds.
	notBefore int64
	// perAction counts pending sites by action: a batch is full when one
	// action fills a call, since each action is a call of its own.
	perAction [2]int32
}

var actions = [2]event.Action{event.Follow, event.Unfollow}

func actionIndex(a event.Action) uint8 {
	if a == event.Unfollow {
		return 1
	}
	return 0
}

// find returns the position of the pending site with key, or -1.
func (u *user[M]) find(key unique.Handle[string]) int {
	if u.index != nil {
		if i, ok := u.index[key]; ok {
			return i
		}
		return -1
	}
	for i := range u.pending {
		if u.pending[i].key == key {
			return i
		}
	}
	return -1
}

// reindex rebuilds the index after pending changed shape.
func (u *user[M]) reindex() {
	if len(u.pending) < indexFrom {
		u.index = nil
		return
	}
	u.index = make(map[unique.Handle[string]]int, len(u.pending))
	for i := range u.pending {
		u.index[u.pending[i].key] = i
	}
}

func (u *user[M]) full(maxSites int) bool {
	return int(u.perAction[0]) >= maxSites || int(u.perAction[1]) >= maxSites
}

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

// Aggregator holds pending work for all users. It is not safe for concurrent
// use: one goroutine owns it.
type Aggregator[M any] struct {
	maxSites int
	// wait is how long a partial batch waits for more sites.
	wait  time.Duration
	users map[string]*user[M]
	// waiting orders users with pending sites by their first pending
	// site's arrival (since): oldest first, whatever the wait.
	waiting deadlines
	// retries orders users handed back (Return, deferred items) by
	// notBefore, once they are otherwise due.
	retries  deadlines
	due      []string
	sites    int
	inFlight int
	visits   uint64
}

// New returns an Aggregator flushing a user at maxSites pending sites or
// linger after the first one.
func New[M any](maxSites int, linger time.Duration) *Aggregator[M] {
	return &Aggregator[M]{maxSites: maxSites, wait: linger, users: make(map[string]*user[M])}
}

// SetWait changes how long a partial batch waits for more sites from its
// first pending site: the linger normally, longer while a backlog is still
// arriving (more sites for the same users are on their way), zero once
// nothing more is coming. It applies to every batch pending, at once.
func (a *Aggregator[M]) SetWait(d time.Duration) { a.wait = d }

// Wait is the current wait (SetWait).
func (a *Aggregator[M]) Wait() time.Duration { return a.wait }

// Add records a request and returns its ticket. seq orders requests for the
// same (user, site): the higher one wins.
func (a *Aggregator[M]) Add(userID string, action event.Action, sites []string, seq uint64, msg M, now time.Time) *Ticket[M] {
	t := &Ticket[M]{Msg: msg, Seq: seq}
	a.Put(t, userID, action, sites, now)
	return t
}

// Put is Add with a ticket the caller allocated (with Msg and Seq set). It
// returns the user id the batch will carry (the first pending request's),
// so the caller need not keep its own copy when they are the same.
func (a *Aggregator[M]) Put(t *Ticket[M], userID string, action event.Action, sites []string, now time.Time) string {
	t.open, t.action = int32(len(sites)), actionIndex(action)
	key := event.UserKey(userID)
	u := a.user(key, userID)
	at := now.UnixNano()
	for _, site := range sites {
		h := unique.Make(site)
		a.put(key, u, newEntry(unique.Make(event.SiteKey(site)), h, at, t))
	}
	a.enqueueIfFull(key, u)
	return u.id
}

func (a *Aggregator[M]) user(key, id string) *user[M] {
	u := a.users[key]
	if u == nil {
		u = &user[M]{id: id}
		a.users[key] = u
	}
	return u
}

// put adds e to u's pending sites, keeping the newer of e and any request
// already pending for the site; the other becomes its loser. The winner
// keeps the earlier place in time: the user has waited since the first.
func (a *Aggregator[M]) put(key string, u *user[M], e entry[M]) {
	i := u.find(e.key)
	switch {
	case i < 0:
		i = len(u.pending)
		u.pending = append(u.pending, e)
		if u.index != nil {
			u.index[e.key] = i
		} else if len(u.pending) == indexFrom {
			u.reindex()
		}
		u.perAction[e.ticket.action]++
		a.sites++
	case e.seq() > u.pending[i].seq():
		old := &u.pending[i]
		u.perAction[old.ticket.action]--
		u.perAction[e.ticket.action]++
		e.at = min(e.at, old.at)
		e.setLosers(append(append(e.losers(), old.losers()...), old.ticket))
		*old = e
	default:
		old := &u.pending[i]
		old.at = min(old.at, e.at)
		old.setLosers(append(append(old.losers(), e.losers()...), e.ticket))
	}
	if since := u.pending[i].at; u.since == 0 || since < u.since {
		u.since = since
		a.schedule(key, u)
	}
}

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

// take moves up to one Graph call's worth of sites per action, oldest first,
// into a batch. Sites beyond that stay pending for the next batch rather than
// going out as a small extra call: when Graph throttles, calls are what is
// scarce, so each should be full.
func (a *Aggregator[M]) take(key string, u *user[M]) *Batch[M] {
	order := make([]int, len(u.pending))
	for i := range order {
		order[i] = i
	}
	// Sequence order, oldest first; site order among a message's sites
	// keeps calls reproducible.
	slices.SortFunc(order, func(x, y int) int {
		ex, ey := &u.pending[x], &u.pending[y]
		return cmp.Or(cmp.Compare(ex.seq(), ey.seq()), cmp.Compare(ex.key.Value(), ey.key.Value()))
	})
	b := &Batch[M]{UserID: u.id, key: key, Items: make([]Item[M], 0, min(len(order), 2*a.maxSites))}
	var taken [2]int
	var since int64
	kept := make([]entry[M], 0, max(len(order)-2*a.maxSites, 0))
	for _, i := range order {
		e := &u.pending[i]
		n := &taken[e.ticket.action]
		if *n == a.maxSites {
			if since == 0 || e.at < since {
				since = e.at
			}
			kept = append(kept, *e)
			continue
		}
		*n++
		site := e.site()
		b.Items = append(b.Items, Item[M]{Site: site.Value(), Action: e.ticket.Action(), Ticket: e.ticket,
			superseded: e.losers(), key: e.key.Value(), keyHandle: e.key, site: site, at: e.at})
		u.perAction[e.ticket.action]--
	}
	u.pending = nil
	if len(kept) > 0 {
		u.pending = kept
	}
	u.reindex()
	a.sites -= len(b.Items)
	u.since = since
	a.schedule(key, u)
	u.inFlight = true
	a.inFlight++
	return b
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
			a.putBack(b.key, u, it, it.Ticket, it.superseded)
			deferred = true
			continue
		}
		retry := it.Retry && !it.Skip
		settle(it.Ticket, retry)
		// A loser with the winner's own sequence is another delivery of the
		// same message (redelivered while this process still held it): it
		// shares the winner's fate, or acking it would settle the message
		// the winner sends back.
		var older []*Ticket[M]
		for _, l := range it.superseded {
			if l.Seq == it.Ticket.Seq {
				settle(l, retry)
			} else {
				older = append(older, l)
			}
		}
		if it.Dead && len(older) > 0 {
			heir, rest := heir(older)
			a.putBack(b.key, u, it, heir, rest)
			continue
		}
		for _, l := range older {
			settle(l, false)
		}
	}
	u.inFlight = false
	a.inFlight--
	if deferred {
		u.notBefore = b.NotBefore.UnixNano()
	}
	switch {
	case len(u.pending) == 0:
		delete(a.users, b.key)
	case u.full(a.maxSites) || u.since+int64(a.wait) <= now.UnixNano():
		a.enqueue(b.key, u)
	default:
		// Its entry may have been dropped while it was in flight.
		a.schedule(b.key, u)
	}
	return done
}

// putBack makes an item's site pending again for ticket t, with losers.
func (a *Aggregator[M]) putBack(key string, u *user[M], it *Item[M], t *Ticket[M], losers []*Ticket[M]) {
	e := newEntry(it.keyHandle, it.site, it.at, t)
	e.setLosers(losers)
	a.put(key, u, e)
}

// heir picks the newest of a dead-lettered item's superseded requests to
// take its place, with the rest superseded by it.
func heir[M any](older []*Ticket[M]) (*Ticket[M], []*Ticket[M]) {
	newest := 0
	for i, l := range older {
		if l.Seq > older[newest].Seq {
			newest = i
		}
	}
	return older[newest], slices.Delete(slices.Clone(older), newest, newest+1)
}

// Return hands back a batch that was not sent at all (another replica
// serves the user right now): its items are pending again, merged with what
// arrived meanwhile, and the user's next batch is due no sooner than
// notBefore.
func (a *Aggregator[M]) Return(b *Batch[M], notBefore time.Time) {
	u := a.users[b.key]
	for i := range b.Items {
		it := &b.Items[i]
		a.putBack(b.key, u, it, it.Ticket, it.superseded)
	}
	u.inFlight = false
	a.inFlight--
	u.notBefore = notBefore.UnixNano()
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

// FlushAll makes every pending batch due now, for shutdown.
func (a *Aggregator[M]) FlushAll() {
	for key, u := range a.users {
		a.visits++
		if !u.inFlight && !u.queued && len(u.pending) > 0 {
			a.enqueue(key, u)
		}
	}
}

// Stats reports pending sites and users in flight.
func (a *Aggregator[M]) Stats() (pendingSites, inFlightUsers int) {
	return a.sites, a.inFlight
}

// Visits counts users examined so far (by Next, FlushOldest and FlushAll):
// work per batch taken, or a scan per call, tells itself apart here.
func (a *Aggregator[M]) Visits() uint64 { return a.visits }

// Superseded reports how many older requests for the same site this item
// overrides; they settle with it.
func (it *Item[M]) Superseded() int { return len(it.superseded) }
