package graphclient

import (
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/sitefollow/sitefollow/internal/event"
)

// Site URL cache defaults (SITEFOLLOW_SITE_URL_CACHE_TTL and _SIZE).
const (
	DefaultSiteURLCacheTTL  = time.Hour
	DefaultSiteURLCacheSize = 10000
	// NotFoundTTL caps how long a 404 is remembered: a site created just
	// after a request named it should be found on the request's next
	// delivery, not an hour later.
	NotFoundTTL = time.Minute
)

// siteCache maps site URLs (by event.SiteURLKey) to site ids, bounded in
// entries (least recently used go first) and in age. It is
// hashicorp/golang-lru's plain LRU with the expiry kept in each entry and
// judged by the Client's clock, rather than its expirable variant, whose
// clean-up goroutine never ends and whose clock cannot be injected.
type siteCache struct {
	lru         *lru.Cache[string, cachedSite]
	ttl, negTTL time.Duration
	now         func() time.Time
}

// cachedSite is one cached answer: an id, or a 404 (notFound).
type cachedSite struct {
	id       string
	notFound *SiteError
	expires  time.Time
}

func newSiteCache(size int, ttl time.Duration, now func() time.Time) (*siteCache, error) {
	if size == 0 {
		size = DefaultSiteURLCacheSize
	}
	if ttl == 0 {
		ttl = DefaultSiteURLCacheTTL
	}
	l, err := lru.New[string, cachedSite](size)
	if err != nil {
		return nil, fmt.Errorf("graphclient: new: site URL cache: %w", err)
	}
	return &siteCache{lru: l, ttl: ttl, negTTL: min(ttl, NotFoundTTL), now: now}, nil
}

// get returns the live entry for key; an expired one is dropped.
func (s *siteCache) get(key string) (cachedSite, bool) {
	e, ok := s.lru.Get(key)
	if !ok {
		return cachedSite{}, false
	}
	if !s.now().Before(e.expires) {
		s.lru.Remove(key)
		return cachedSite{}, false
	}
	return e, true
}

// put caches e for key, for the TTL its kind has.
func (s *siteCache) put(key string, e cachedSite) {
	ttl := s.ttl
	if e.id == "" {
		ttl = s.negTTL
	}
	e.expires = s.now().Add(ttl)
	s.lru.Add(key, e)
}

// CachedSite returns the site id cached for siteURL, without any I/O: for
// callers that must not block (the Consume callback), which hand misses to
// ResolveSite elsewhere. A cached 404 is not returned here.
func (c *Client) CachedSite(siteURL string) (string, bool) {
	e, ok := c.sites.get(event.SiteURLKey(siteURL))
	if !ok || e.id == "" {
		return "", false
	}
	c.metrics.resolved("hit")
	return e.id, true
}
