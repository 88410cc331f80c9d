package graphsim

import "strings"

// maxCachedIDs bounds Server.ids. Benchmarks send the same few thousand
// ids over and over, which the cache serves; a stream of ever-new ids just
// empties it now and then, so the sim's memory stays flat either way.
const maxCachedIDs = 1 << 13

// siteInfo is what the sim derives from one raw, well-formed site id string,
// cached so that an id seen again costs a map lookup instead of parsing,
// lower-casing and rendering. Guarded by Server.mu, except that a rendered
// object never changes once set and may be read after unlocking.
type siteInfo struct {
	site    siteID
	key     string    // site.key()
	known   bool      // a known site; sites never become unknown again
	objects [2][]byte // site.appendObject for lower and upper case, rendered on first use
}

// infoLocked returns the siteInfo of id, or nil when id is malformed.
func (s *Server) infoLocked(id string) *siteInfo {
	if in, ok := s.ids[id]; ok {
		return in
	}
	// The id may be a substring of a whole request body; the cache must not
	// keep that alive.
	id = strings.Clone(id)
	site, err := parseSiteID(id)
	if err != nil {
		return nil
	}
	if len(s.ids) >= maxCachedIDs {
		clear(s.ids)
	}
	in := &siteInfo{site: site, key: site.key()}
	s.ids[id] = in
	return in
}

// object returns the JSON of the site's add answer entry.
func (in *siteInfo) object(upper bool) []byte {
	i := 0
	if upper {
		i = 1
	}
	if in.objects[i] == nil {
		// The object holds the host three times and the GUIDs twice.
		in.objects[i] = in.site.appendObject(make([]byte, 0, 180+3*len(in.site.host)+4*36), upper)
	}
	return in.objects[i]
}

// knownInfoLocked is knownLocked for a well-formed id, remembering a yes.
func (s *Server) knownInfoLocked(in *siteInfo) bool {
	if !in.known {
		in.known = s.knownLocked(in.key)
	}
	return in.known
}
