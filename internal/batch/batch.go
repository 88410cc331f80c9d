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

// Stats reports pending sites and users in flight.
func (a *Aggregator[M]) Stats() (pendingSites, inFlightUsers int) {
	return a.sites, a.inFlight
}

// Superseded reports how many older requests for the same site this item
// overrides; they settle with it.
func (it *Item[M]) Superseded() int { return len(it.superseded) }
