package graphclient

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// siteURLSim starts a graphsim that knows urls (URL → site id).
func siteURLSim(t *testing.T, urls map[string]string) *graphsim.Server {
	t.Helper()
	sim, err := graphsim.New(graphsim.Options{SiteURLs: urls})
	if err != nil {
		t.Fatalf("graphsim.New: %v", err)
	}
	t.Cleanup(sim.Close)
	return sim
}

// siteGets returns the sim's getSite calls.
func siteGets(sim *graphsim.Server) []graphsim.Call {
	var gets []graphsim.Call
	for _, c := range sim.Calls() {
		if c.Op == graphsim.OpGetSite {
			gets = append(gets, c)
		}
	}
	return gets
}

func TestResolveSite(t *testing.T) {
	t.Parallel()
	const (
		finance = "https://contoso.sharepoint.com/sites/Finance"
		root    = "https://contoso.sharepoint.com"
	)
	tests := []struct {
		name    string
		known   string // the URL the sim knows, as given to it
		resolve string // the URL resolved
		// wantURL is the URL the sim saw asked (its key: lower-case host,
		// unescaped path).
		wantURL string
		// alias, when set, is another spelling of the URL, resolved after
		// it from the cache.
		alias string
	}{
		{name: "site path", known: finance, resolve: finance, wantURL: finance},
		{name: "root site", known: root, resolve: root, wantURL: root},
		{name: "root site with slash", known: root, resolve: root + "/", wantURL: root},
		{name: "host case and trailing slash", known: finance, resolve: "https://CONTOSO.SharePoint.com/sites/Finance/", wantURL: finance,
			alias: finance},
		{name: "alias hits the cache", known: finance, resolve: finance, wantURL: finance, alias: "https://Contoso.SHAREPOINT.com/sites/Finance//"},
		{name: "escaped space", known: "https://contoso.sharepoint.com/sites/My Site", resolve: "https://contoso.sharepoint.com/sites/My%20Site",
			wantURL: "https://contoso.sharepoint.com/sites/My Site"},
		{name: "non-ASCII as given", known: "https://contoso.sharepoint.com/sites/Förderung", resolve: "https://contoso.sharepoint.com/sites/Förderung",
			wantURL: "https://contoso.sharepoint.com/sites/Förderung"},
		{name: "non-ASCII escaped", known: "https://contoso.sharepoint.com/sites/Förderung", resolve: "https://contoso.sharepoint.com/sites/F%C3%B6rderung",
			wantURL: "https://contoso.sharepoint.com/sites/Förderung"},
		{name: "reserved characters", known: "https://contoso.sharepoint.com/teams/R&D;+=,'", resolve: "https://contoso.sharepoint.com/teams/R&D;+=,'",
			wantURL: "https://contoso.sharepoint.com/teams/R&D;+=,'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id := siteID(7)
			sim := siteURLSim(t, map[string]string{tt.known: id})
			c := newSimClient(t, sim, nil)
			got, err := c.ResolveSite(context.Background(), tt.resolve)
			if err != nil {
				t.Fatalf("ResolveSite(%q): %v", tt.resolve, err)
			}
			if got != id {
				t.Errorf("ResolveSite(%q) = %q, want %q", tt.resolve, got, id)
			}
			gets := siteGets(sim)
			if len(gets) != 1 {
				t.Fatalf("getSite calls = %d, want 1", len(gets))
			}
			if gets[0].SiteURL != tt.wantURL {
				t.Errorf("sim was asked for %q, want %q", gets[0].SiteURL, tt.wantURL)
			}
			if gets[0].UserAgent != testUserAgent {
				t.Errorf("User-Agent = %q, want %q", gets[0].UserAgent, testUserAgent)
			}
			// A hit: the same site again, however its URL is spelt, costs
			// no GET.
			if again, err := c.ResolveSite(context.Background(), tt.resolve); err != nil || again != id {
				t.Errorf("second ResolveSite = %q, %v; want %q", again, err, id)
			}
			if cached, ok := c.CachedSite(tt.resolve); !ok || cached != id {
				t.Errorf("CachedSite = %q, %t; want %q, true", cached, ok, id)
			}
			if tt.alias != "" {
				if again, err := c.ResolveSite(context.Background(), tt.alias); err != nil || again != id {
					t.Errorf("ResolveSite(%q) = %q, %v; want %q", tt.alias, again, err, id)
				}
			}
			if n := len(siteGets(sim)); n != 1 {
				t.Errorf("getSite calls after a cache hit = %d, want still 1", n)
			}
		})
	}
}

func TestResolveSiteNotFound(t *testing.T) {
	t.Parallel()
	sim := siteURLSim(t, nil)
	c := newSimClient(t, sim, nil)
	const u = "https://contoso.sharepoint.com/sites/Nowhere"
	if _, ok := c.CachedSite(u); ok {
		t.Fatalf("CachedSite of an unknown URL says cached")
	}
	for i := range 2 {
		_, err := c.ResolveSite(context.Background(), u)
		if !errors.Is(err, ErrSiteNotFound) {
			t.Fatalf("ResolveSite #%d error = %v, want ErrSiteNotFound", i+1, err)
		}
		var re *ResolveError
		if !errors.As(err, &re) || re.Transient || re.URL != u || re.Err.HTTPStatus != http.StatusNotFound || re.Err.Code != "itemNotFound" {
			t.Fatalf("ResolveSite #%d error = %#v, want a permanent 404 itemNotFound ResolveError naming the URL", i+1, err)
		}
	}
	// The 404 is remembered (briefly): the second resolve made no GET,
	// but CachedSite, for the no-I/O path, does not return it.
	if n := len(siteGets(sim)); n != 1 {
		t.Errorf("getSite calls = %d, want 1 (the 404 cached)", n)
	}
	if _, ok := c.CachedSite(u); ok {
		t.Errorf("CachedSite returns a 404")
	}
}

func TestResolveSiteTTL(t *testing.T) {
	t.Parallel()
	const (
		u    = "https://contoso.sharepoint.com/sites/Finance"
		gone = "https://contoso.sharepoint.com/sites/Gone"
	)
	sim := siteURLSim(t, map[string]string{u: siteID(1)})
	// The clock runs at real time's rate (the gate needs it), and jumps.
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	c := newSimClient(t, sim, func(cfg *Config) {
		cfg.Now = now
		cfg.SiteURLCacheTTL = time.Hour
	})
	ctx := context.Background()
	resolve := func(url string) {
		t.Helper()
		if _, err := c.ResolveSite(ctx, url); err != nil && !errors.Is(err, ErrSiteNotFound) {
			t.Fatalf("ResolveSite(%q): %v", url, err)
		}
	}
	resolve(u)
	resolve(gone)
	steps := []struct {
		advance  time.Duration
		wantGets int
	}{
		{0, 2},                         // both cached
		{NotFoundTTL + time.Second, 3}, // the 404 expired, the id not
		{time.Hour - NotFoundTTL, 5},   // the id expired too (and the new 404 again)
	}
	for _, st := range steps {
		offset.Add(int64(st.advance))
		resolve(u)
		resolve(gone)
		if got := len(siteGets(sim)); got != st.wantGets {
			t.Errorf("after +%s: getSite calls = %d, want %d", st.advance, got, st.wantGets)
		}
	}
}

func TestResolveSiteTransient(t *testing.T) {
	t.Parallel()
	const u = "https://contoso.sharepoint.com/sites/Finance"
	tests := []struct {
		name          string
		unavailable   int
		attempts      int
		wantErr       bool
		wantGets      int
		wantCodeOnErr string
	}{
		{name: "503 retried", unavailable: 2, attempts: 5, wantGets: 3},
		{name: "503 outlasts attempts", unavailable: 10, attempts: 2, wantErr: true, wantGets: 2, wantCodeOnErr: "serviceNotAvailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := siteURLSim(t, map[string]string{u: siteID(3)})
			c := newSimClient(t, sim, func(cfg *Config) { cfg.MaxAttempts = tt.attempts })
			sim.Unavailable(tt.unavailable, http.StatusServiceUnavailable)
			id, err := c.ResolveSite(context.Background(), u)
			if got := len(siteGets(sim)); got != tt.wantGets {
				t.Errorf("getSite calls = %d, want %d", got, tt.wantGets)
			}
			if !tt.wantErr {
				if err != nil || id != siteID(3) {
					t.Fatalf("ResolveSite = %q, %v; want %q", id, err, siteID(3))
				}
				return
			}
			var re *ResolveError
			if !errors.As(err, &re) || !re.Transient || errors.Is(err, ErrSiteNotFound) || re.Err.Code != tt.wantCodeOnErr {
				t.Fatalf("ResolveSite error = %v, want a transient ResolveError with code %s", err, tt.wantCodeOnErr)
			}
			// Nothing cached for a failure: the next resolve asks again.
			sim.ClearFaults()
			if id, err := c.ResolveSite(context.Background(), u); err != nil || id != siteID(3) {
				t.Fatalf("ResolveSite after the outage = %q, %v; want %q", id, err, siteID(3))
			}
		})
	}
}

func TestResolveSiteRefusesInvalidURL(t *testing.T) {
	t.Parallel()
	sim := siteURLSim(t, nil)
	c := newSimClient(t, sim, nil)
	for _, u := range []string{"http://contoso.sharepoint.com/sites/a", "https://contoso.sharepoint.com/sites/../../users/bob", "https://contoso.sharepoint.com/a?b"} {
		_, err := c.ResolveSite(context.Background(), u)
		var re *ResolveError
		if !errors.As(err, &re) || re.Transient || re.Err.Code != CodeInvalidSiteURL {
			t.Errorf("ResolveSite(%q) error = %v, want a permanent %s", u, err, CodeInvalidSiteURL)
		}
	}
	if n := len(siteGets(sim)); n != 0 {
		t.Errorf("getSite calls = %d, want 0", n)
	}
}

// TestResolveSiteSharesConcurrentMisses resolves one site, spelt several
// ways, from many goroutines at once while Graph is slow to answer: one
// GET serves them all, and each error or id is the caller's own.
func TestResolveSiteSharesConcurrentMisses(t *testing.T) {
	t.Parallel()
	const id = "contoso.sharepoint.com,11111111-1111-1111-1111-111111111111,22222222-2222-2222-2222-222222222222"
	sim := siteURLSim(t, map[string]string{"https://contoso.sharepoint.com/sites/Finance": id})
	sim.SetLatency(300 * time.Millisecond)
	c := newSimClient(t, sim, nil)
	tests := []struct {
		url    string
		wantID string
	}{
		{"https://contoso.sharepoint.com/sites/Finance", id},
		{"https://CONTOSO.sharepoint.com/sites/Finance/", id},
		{"https://contoso.sharepoint.com/sites/Nowhere", ""},
		{"https://contoso.SharePoint.com/sites/Nowhere/", ""},
	}
	const callers = 8
	type answer struct {
		url, id string
		err     error
	}
	answers := make(chan answer, callers*len(tests))
	for range callers {
		for _, tt := range tests {
			go func() {
				id, err := c.ResolveSite(context.Background(), tt.url)
				answers <- answer{tt.url, id, err}
			}()
		}
	}
	want := make(map[string]string, len(tests))
	for _, tt := range tests {
		want[tt.url] = tt.wantID
	}
	for range callers * len(tests) {
		a := <-answers
		var re *ResolveError
		switch {
		case want[a.url] != "" && (a.err != nil || a.id != want[a.url]):
			t.Errorf("ResolveSite(%s) = %q, %v; want %q", a.url, a.id, a.err, want[a.url])
		case want[a.url] == "" && (!errors.As(a.err, &re) || re.URL != a.url || !errors.Is(a.err, ErrSiteNotFound)):
			t.Errorf("ResolveSite(%s) error = %v, want ErrSiteNotFound naming %s", a.url, a.err, a.url)
		}
	}
	if n := len(siteGets(sim)); n != 2 {
		t.Errorf("getSite calls = %d, want 2 (one per site, shared by every caller)", n)
	}
}
