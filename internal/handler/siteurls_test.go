package handler_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/handler"
)

const (
	financeURL = "https://contoso.sharepoint.com/sites/Finance"
	hrURL      = "https://contoso.sharepoint.com/teams/HR"
	missingURL = "https://contoso.sharepoint.com/sites/DoesNotExist"
)

// urlSites maps the URLs the simulator resolves to known sites.
func urlSites() map[string]string {
	return map[string]string{financeURL: site(1), hrURL: site(2)}
}

// sendURLs publishes a request naming sites by id and by URL.
func (e *env) sendURLs(user string, action event.Action, ids, urls []string) {
	e.t.Helper()
	b, err := json.Marshal(event.Request{UserID: user, Action: action, SiteIDs: ids, SiteURLs: urls, ID: "req-" + user})
	if err != nil {
		e.t.Fatal(err)
	}
	e.publish("sitefollow.requests.app", string(b))
}

// callsByOp counts the simulator's calls by operation, from the from-th on.
func (e *env) callsByOp(from int) map[string]int {
	n := make(map[string]int)
	for _, c := range e.sim.Calls()[from:] {
		n[c.Op]++
	}
	return n
}

// TestSiteURLAndIDOfOneSiteCoalesce: a follow by URL then an unfollow by
// the same site's id, newer last, are one site: only the unfollow is sent,
// and the site ends unfollowed, however the two meet (in one batch, or the
// follow arriving after the unfollow was applied: its resolution takes a
// GET the id does not). Keyed by URL, the follow would be a site of its
// own and be applied after the unfollow.
func TestSiteURLAndIDOfOneSiteCoalesce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withSiteURLs(urlSites()))
	const user = "ann@contoso.com"
	e.send(user, event.Follow, site(1), site(5))
	e.settled()
	if got, want := e.followed(user), sorted(site(1), site(5)); !slices.Equal(got, want) {
		t.Fatalf("before: followed %v, want %v", got, want)
	}
	from := e.sim.CallCount()
	e.sendURLs(user, event.Follow, nil, []string{financeURL})
	e.send(user, event.Unfollow, site(1))
	e.settled()
	if got, want := e.followed(user), sorted(site(5)); !slices.Equal(got, want) {
		t.Errorf("after: followed %v, want %v (the unfollow, newest, wins)", got, want)
	}
	got := e.callsByOp(from)
	want := map[string]int{graphsim.OpGetSite: 1, "remove": 1}
	if !maps.Equal(got, want) {
		t.Errorf("calls: got %v, want %v (one resolution, one remove, no add)", got, want)
	}
	if letters := e.deadLetters(); len(letters) != 0 {
		t.Errorf("dead letters: got %d, want none: %+v", len(letters), letters)
	}
}

// TestSiteURLAndIDInOneEventAreOneSite: an event naming a site by id and
// by URL (in another spelling) sends it once.
func TestSiteURLAndIDInOneEventAreOneSite(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withSiteURLs(urlSites()))
	const user = "bob@contoso.com"
	e.sendURLs(user, event.Follow, []string{site(1)}, []string{"https://CONTOSO.sharepoint.com/sites/Finance/", hrURL})
	e.settled()
	if got, want := e.followed(user), sorted(site(1), site(2)); !slices.Equal(got, want) {
		t.Errorf("followed %v, want %v", got, want)
	}
	for _, c := range e.sim.Calls() {
		if c.Op == "add" && len(c.SiteIDs) != 2 {
			t.Errorf("add call with sites %v, want the 2 distinct sites", c.SiteIDs)
		}
	}
}

// TestSiteURLNotFoundIsDeadLettered: a URL with no site is dead-lettered
// as siteNotFound naming it, the event's other sites are applied, and the
// message is acknowledged; an event of nothing but such URLs is
// acknowledged once its dead letters are stored, without a follow call.
func TestSiteURLNotFoundIsDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withSiteURLs(urlSites()))
	e.sendURLs("cat@contoso.com", event.Follow, []string{site(3)}, []string{missingURL, financeURL})
	e.settled()
	if got, want := e.followed("cat@contoso.com"), sorted(site(1), site(3)); !slices.Equal(got, want) {
		t.Errorf("followed %v, want %v", got, want)
	}
	e.sendURLs("dan@contoso.com", event.Unfollow, nil, []string{missingURL})
	e.settled()
	letters := e.deadLetters()
	if len(letters) != 2 {
		t.Fatalf("dead letters: got %d, want 2: %+v", len(letters), letters)
	}
	for i, want := range []struct {
		user   string
		action event.Action
	}{{"cat@contoso.com", event.Follow}, {"dan@contoso.com", event.Unfollow}} {
		l := letters[i]
		if l.Error.Code != event.CodeSiteNotFound || l.Subject != dlqPrefix+"."+event.CodeSiteNotFound || l.SiteURL != missingURL ||
			l.SiteID != "" || l.UserID != want.user || l.Action != want.action || l.Error.HTTPStatus != http.StatusNotFound {
			t.Errorf("dead letter %d: got code %q subject %q siteUrl %q siteId %q user %q action %q status %d, want %s naming %s for %s %s",
				i, l.Error.Code, l.Subject, l.SiteURL, l.SiteID, l.UserID, l.Action, l.Error.HTTPStatus, event.CodeSiteNotFound, missingURL, want.user, want.action)
		}
		req, err := event.Decoder{}.Decode(l.Event)
		if err != nil || !l.Narrowed || !slices.Equal(req.SiteURLs, []string{missingURL}) || len(req.SiteIDs) != 0 || req.ID != "req-"+want.user {
			t.Errorf("dead letter %d event: got %s (%v), narrowed %t; want the request narrowed to %s", i, l.Event, err, l.Narrowed, missingURL)
		}
	}
	for _, c := range e.sim.Calls() {
		if c.UserID == "dan@contoso.com" {
			t.Errorf("call for dan, whose only site was not found: %+v", c)
		}
	}
}

// TestSiteURLCacheHitMakesNoGET: the second request naming a URL is
// resolved from the cache, without a Graph GET.
func TestSiteURLCacheHitMakesNoGET(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withSiteURLs(urlSites()))
	users := []string{"eve@contoso.com", "fay@contoso.com", "gus@contoso.com"}
	for _, u := range users {
		e.sendURLs(u, event.Follow, nil, []string{financeURL})
		e.settled()
	}
	for _, u := range users {
		if got, want := e.followed(u), sorted(site(1)); !slices.Equal(got, want) {
			t.Errorf("%s follows %v, want %v", u, got, want)
		}
	}
	if got := e.callsByOp(0)[graphsim.OpGetSite]; got != 1 {
		t.Errorf("getSite calls: got %d, want 1 (then cache hits)", got)
	}
}

// TestSiteURLTransientFailure: a resolution that fails transiently sends
// the message back, and it is applied on a later delivery; one that fails
// on every delivery is dead-lettered as retriesExhausted naming the URL.
func TestSiteURLTransientFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		unavailable int
		wantCode    string // "" means applied, no dead letter
	}{
		{name: "recovers", unavailable: 6},
		{name: "outlasts deliveries", unavailable: 1000, wantCode: event.CodeRetriesExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withSiteURLs(urlSites()), withConfig(func(c *handler.Config) { c.MaxDeliver = 3 }))
			e.sim.Unavailable(tt.unavailable, http.StatusServiceUnavailable)
			e.sendURLs("hal@contoso.com", event.Follow, nil, []string{hrURL})
			e.settled()
			letters := e.deadLetters()
			if tt.wantCode == "" {
				if len(letters) != 0 || !slices.Equal(e.followed("hal@contoso.com"), sorted(site(2))) {
					t.Errorf("got dead letters %+v, followed %v; want none, and %s followed", letters, e.followed("hal@contoso.com"), site(2))
				}
				return
			}
			if len(letters) != 1 || letters[0].Error.Code != tt.wantCode || letters[0].SiteURL != hrURL || letters[0].Attempts != 3 {
				t.Fatalf("dead letters: got %+v, want one %s naming %s after 3 deliveries", letters, tt.wantCode, hrURL)
			}
		})
	}
}

// TestShutdownNAKsWhatTheResolverHolds: a request whose URL is being
// resolved when the handler stops is NAKed, not acknowledged or
// dead-lettered, and applied by the next handler.
func TestShutdownNAKsWhatTheResolverHolds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withSiteURLs(urlSites()))
	e.sim.SetOpLatency(graphsim.OpGetSite, time.Hour)
	e.sendURLs("ivy@contoso.com", event.Follow, nil, []string{financeURL})
	// A call in flight has no Op yet; this GET is the only call.
	e.eventually("the site GET to be in flight", func() bool { return e.sim.CallCount() == 1 })
	e.stop()
	if n := e.streamMsgs(stream); n != 1 {
		t.Fatalf("requests in the stream after stopping: got %d, want 1 (not acknowledged)", n)
	}
	if letters := e.deadLetters(); len(letters) != 0 {
		t.Fatalf("dead letters: got %+v, want none", letters)
	}
	e.sim.SetOpLatency(graphsim.OpGetSite, 0)
	e.start()
	e.settled()
	if got, want := e.followed("ivy@contoso.com"), sorted(site(1)); !slices.Equal(got, want) {
		t.Errorf("followed %v, want %v", got, want)
	}
}
