package batch

import (
	"unique"

	"github.com/sitefollow/sitefollow/internal/event"
)

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
