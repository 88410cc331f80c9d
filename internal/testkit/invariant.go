package testkit

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// Sent is a request as published, with the stream sequence its PubAck gave.
type Sent struct {
	Seq    uint64
	User   string
	Action event.Action
	Sites  []string
}

// Pair is a (user, site) in canonical lower case.
type Pair struct{ User, Site string }

func (p Pair) String() string { return p.User + " " + p.Site }

// Verdict is what Check found.
type Verdict struct {
	Pairs       int      // pairs any request named
	Wrong       []string // pairs whose end state is not the last surviving request's action
	Order       []string // effects no request at or after the previous match explains
	Duplicates  []string // dead letters stored more than once
	DeadLetters int
}

// OK reports whether the invariant held.
func (v Verdict) OK() bool { return len(v.Wrong) == 0 && len(v.Order) == 0 && len(v.Duplicates) == 0 }

// Summary is one line of figures.
func (v Verdict) Summary() string {
	return fmt.Sprintf("pairs wrong %d of %d, effects out of order %d, dead letters %d (stored twice %d)",
		len(v.Wrong), v.Pairs, len(v.Order), v.DeadLetters, len(v.Duplicates))
}

// Report fails t with the summary and up to 20 examples of each kind of
// violation; it does nothing when the invariant held.
func (v Verdict) Report(t testing.TB) {
	t.Helper()
	if v.OK() {
		return
	}
	var b strings.Builder
	for _, list := range []struct {
		what  string
		items []string
	}{{"wrong end state", v.Wrong}, {"older request applied after a newer one", v.Order}, {"dead letter stored twice", v.Duplicates}} {
		for i, s := range list.items {
			if i == 20 {
				fmt.Fprintf(&b, "\n  %s: … %d more", list.what, len(list.items)-20)
				break
			}
			fmt.Fprintf(&b, "\n  %s: %s", list.what, s)
		}
	}
	t.Errorf("invariant broken: %s%s", v.Summary(), b.String())
}

// Check judges the consumer's promise once everything has settled: for every
// pair, the simulator's state equals the action of the last request for it
// (highest stream sequence) not dead-lettered for that site, or unfollowed
// when there is none (the simulator starting empty); no effect in the
// simulator's log applied an older request after a newer one; and no dead
// letter (origin sequence, site) is stored twice.
//
// The order check walks each pair's effects in order and matches each
// against the pair's requests in sequence order, greedily: an effect must
// match a request with the same action at or after the previous match.
func Check(sent []Sent, sim *graphsim.Server, letters []dlq.Stored) Verdict {
	followed := make(map[Pair]bool)
	for _, u := range sim.Users() {
		for _, s := range sim.Followed(u) {
			followed[Pair{u, s}] = true
		}
	}
	return check(sent, followed, sim.Effects(), letters)
}

// check is Check on the simulator's end state and effects; it consumes
// followed.
func check(sent []Sent, followed map[Pair]bool, effects []graphsim.Effect, letters []dlq.Stored) Verdict {
	type key struct {
		seq  uint64
		site string
	}
	dead := make(map[key]int)
	var v Verdict
	for _, l := range letters {
		if l.Origin.Stream != RequestStream {
			continue
		}
		k := key{l.Origin.Sequence, event.SiteKey(l.SiteID)}
		dead[k]++
		if dead[k] == 2 {
			v.Duplicates = append(v.Duplicates, fmt.Sprintf("origin %d site %s (%s)", k.seq, k.site, l.Error.Code))
		}
	}
	v.DeadLetters = len(letters)

	byPair := make(map[Pair][]req)
	for _, s := range sent {
		user := event.UserKey(s.User)
		seen := map[string]bool{}
		for _, site := range s.Sites {
			site = event.SiteKey(site)
			if seen[site] {
				continue
			}
			seen[site] = true
			byPair[Pair{user, site}] = append(byPair[Pair{user, site}], req{s.Seq, string(s.Action)})
		}
	}
	pairs := slices.SortedFunc(func(yield func(Pair) bool) {
		for p := range byPair {
			if !yield(p) {
				return
			}
		}
	}, func(a, b Pair) int { return cmp.Or(cmp.Compare(a.User, b.User), cmp.Compare(a.Site, b.Site)) })
	v.Pairs = len(pairs)

	for _, p := range pairs {
		reqs := byPair[p]
		slices.SortFunc(reqs, func(a, b req) int { return cmp.Compare(a.seq, b.seq) })
		byPair[p] = reqs
		want, by := false, "no surviving request"
		for _, r := range slices.Backward(reqs) {
			if dead[key{r.seq, p.Site}] > 0 {
				continue
			}
			want, by = r.action == string(event.Follow), fmt.Sprintf("%s seq %d", r.action, r.seq)
			break
		}
		if got := followed[p]; got != want {
			v.Wrong = append(v.Wrong, fmt.Sprintf("%s: got followed=%v, want %v (%s; requests %s)", p, got, want, by, history(reqs)))
		}
		delete(followed, p)
	}
	for _, p := range slices.SortedFunc(func(yield func(Pair) bool) {
		for p := range followed {
			if !yield(p) {
				return
			}
		}
	}, func(a, b Pair) int { return cmp.Or(cmp.Compare(a.User, b.User), cmp.Compare(a.Site, b.Site)) }) {
		v.Wrong = append(v.Wrong, fmt.Sprintf("%s: followed, but no request named it", p))
	}

	pos := make(map[Pair]int)
	matched := make(map[Pair]bool)
	for _, e := range effects {
		p := Pair{e.User, e.Site}
		reqs := byPair[p]
		i := pos[p]
		for i < len(reqs) && reqs[i].action != e.Op {
			i++
		}
		if i == len(reqs) {
			after := "the start"
			if matched[p] {
				after = fmt.Sprintf("%s seq %d, matched before", reqs[pos[p]].action, reqs[pos[p]].seq)
			}
			v.Order = append(v.Order, fmt.Sprintf("%s: %s at %s matches no request at or after %s (requests %s)",
				p, e.Op, e.At.Format("15:04:05.000"), after, history(reqs)))
			continue
		}
		pos[p] = i
		matched[p] = true
	}
	return v
}

// req is one request's part for one pair.
type req struct {
	seq    uint64
	action string
}

// history renders a pair's requests compactly: "f3 u7 f9".
func history(reqs []req) string {
	parts := make([]string, len(reqs))
	for i, r := range reqs {
		parts[i] = fmt.Sprintf("%c%d", r.action[0], r.seq)
	}
	return strings.Join(parts, " ")
}
