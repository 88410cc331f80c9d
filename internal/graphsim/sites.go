package graphsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// OpGetSite is Call.Op for GET /v1.0/sites/{hostname}[:/{path}], which
// resolves a site URL to its site.
const OpGetSite = "getSite"

// siteURLKey is the form the sim matches site URLs in: "https://", the
// hostname in lower case, then the unescaped path segments, empty ones
// dropped (so no trailing "/"). The path keeps its case.
func siteURLKey(host string, segments []string) string {
	var b strings.Builder
	b.WriteString("https://")
	b.WriteString(strings.ToLower(host))
	for _, seg := range segments {
		if seg != "" {
			b.WriteByte('/')
			b.WriteString(seg)
		}
	}
	return b.String()
}

// parseSiteURL is siteURLKey of an Options.SiteURLs key: https://host/path,
// its path unescaped segment by segment.
func parseSiteURL(raw string) (string, error) {
	rest, ok := strings.CutPrefix(raw, "https://")
	if !ok {
		return "", fmt.Errorf("site URL %q: must start with https://", raw)
	}
	host, path, _ := strings.Cut(rest, "/")
	if !validHost(host) {
		return "", fmt.Errorf("site URL %q: bad hostname", raw)
	}
	segments := strings.Split(path, "/")
	for i, seg := range segments {
		s, err := url.PathUnescape(seg)
		if err != nil {
			return "", fmt.Errorf("site URL %q: %w", raw, err)
		}
		segments[i] = s
	}
	return siteURLKey(host, segments), nil
}

// siteRoute matches GET /v1.0/sites/{hostname} and
// /v1.0/sites/{hostname}:/{server-relative-path} and returns the URL key.
func siteRoute(u *url.URL) (string, bool) {
	rest, ok := strings.CutPrefix(u.EscapedPath(), "/v1.0/sites/")
	if !ok || rest == "" {
		return "", false
	}
	host, path, hasPath := strings.Cut(rest, ":")
	if strings.Contains(host, "/") || host == "" {
		return "", false
	}
	var segments []string
	if hasPath {
		if !strings.HasPrefix(path, "/") {
			return "", false
		}
		for _, seg := range strings.Split(path[1:], "/") {
			s, err := url.PathUnescape(seg)
			if err != nil {
				return "", false
			}
			segments = append(segments, s)
		}
	}
	h, err := url.PathUnescape(host)
	if err != nil {
		return "", false
	}
	return siteURLKey(h, segments), true
}

// serveSite answers a site GET from Options.SiteURLs: 200 with the site
// resource, 404 itemNotFound for any other URL. Like every Graph call it
// needs a token, is recorded in Calls (Op OpGetSite, SiteURL the URL key,
// SiteIDs the id answered), and meets the latency, the injected faults
// (Throttle, Unavailable), the rate limit and the budget.
func (s *Server) serveSite(w http.ResponseWriter, r *http.Request, key string, httpRequest int) {
	call := s.beginCall(time.Now(), r.Header.Get(headerClientRequestID), r.UserAgent(), httpRequest, "")
	rep, id := s.handleSite(r, key)
	res := callResult{op: OpGetSite, siteURL: key}
	if id != "" {
		res.ids = []string{id}
	}
	if rep == nil {
		s.finishCall(call, res)
		return
	}
	res.status = rep.status()
	if err := s.writeGraph(w, r, rep); err != nil {
		res.status = 0
	}
	if rep.retryAfter != "" {
		res.retryAfter = rep.wait
	}
	if rep.announce {
		res.notBefore = rep.until
		if res.notBefore.IsZero() {
			res.notBefore = time.Now().Add(rep.wait)
		}
		s.announce(res.notBefore)
	}
	res.answered, res.throttled = time.Now(), rep.throttled
	s.finishCall(call, res)
}

// handleSite decides a site GET's answer and the id it names, if any; a
// nil answer means none can be sent.
func (s *Server) handleSite(r *http.Request, key string) (*reply, string) {
	s.mu.Lock()
	latency := s.latency + s.opLatency[OpGetSite]
	s.mu.Unlock()
	if err := s.pause(r.Context(), latency); err != nil {
		return nil, ""
	}
	if rep := s.authorize(r.Header.Get("Authorization")); rep != nil {
		return rep, ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if rep := s.admitLocked(now, ""); rep != nil {
		return rep, ""
	}
	rep, quota := s.spendBudgetLocked(now)
	if rep != nil {
		return rep, ""
	}
	id, ok := s.siteURLs[key]
	if !ok {
		return withHeader(&reply{err: &graphError{status: http.StatusNotFound, code: "itemNotFound", message: "Requested site could not be found"}}, quota), ""
	}
	body, err := json.Marshal(struct {
		ID     string `json:"id"`
		WebURL string `json:"webUrl"`
	}{id, key})
	if err != nil {
		// Two strings: Marshal cannot fail.
		panic("graphsim: encode site: " + err.Error())
	}
	return withHeader(&reply{code: http.StatusOK, object: body}, quota), id
}

// AddSiteURL makes url name the site id from now on (as Options.SiteURLs
// does from the start), the site becoming known if it was not.
func (s *Server) AddSiteURL(rawURL, id string) error {
	key, err := parseSiteURL(rawURL)
	if err != nil {
		return fmt.Errorf("graphsim add site URL: %w", err)
	}
	site, err := parseSiteID(id)
	if err != nil {
		return fmt.Errorf("graphsim add site URL: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.siteURLs[key] = id
	s.sites[site.key()] = true
	return nil
}
