package graphsim

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
)

// errSiteID classifies malformed site ids.
var errSiteID = errors.New("malformed site id")

// siteID is a parsed "hostname,siteGuid,webGuid" composite id. host keeps
// the caller's spelling so that answers echo it; the GUIDs are lower case.
type siteID struct {
	host, site, web string
}

// parseSiteID accepts exactly three comma-separated parts: a hostname and two
// hyphenated GUIDs in any case.
func parseSiteID(id string) (siteID, error) {
	parts := strings.Split(id, ",")
	if len(parts) != 3 {
		return siteID{}, fmt.Errorf("parse site id %q: want 3 comma-separated parts, got %d: %w", id, len(parts), errSiteID)
	}
	if !validHost(parts[0]) {
		return siteID{}, fmt.Errorf("parse site id %q: bad hostname: %w", id, errSiteID)
	}
	for _, g := range parts[1:] {
		if !validGUID(g) {
			return siteID{}, fmt.Errorf("parse site id %q: bad guid %q: %w", id, g, errSiteID)
		}
	}
	return siteID{host: parts[0], site: strings.ToLower(parts[1]), web: strings.ToLower(parts[2])}, nil
}

// key is the canonical, all-lower-case form used for state and matching.
func (s siteID) key() string {
	return strings.ToLower(s.host) + "," + s.site + "," + s.web
}

// render is the id as the sim answers it: hostname as requested, GUIDs lower
// case or, when upper is set, upper case (as Graph sometimes answers).
func (s siteID) render(upper bool) string {
	site, web := s.guids(upper)
	return s.host + "," + site + "," + web
}

func (s siteID) guids(upper bool) (string, string) {
	if upper {
		return strings.ToUpper(s.site), strings.ToUpper(s.web)
	}
	return s.site, s.web
}

// object is the Graph site resource the add call answers with.
func (s siteID) object(upper bool) siteObject {
	site, web := s.guids(upper)
	name := "Site-" + s.web[:8]
	url := "https://" + strings.ToLower(s.host) + "/sites/" + name
	return siteObject{
		ID:     s.render(upper),
		WebURL: url,
		Name:   name,
		SharepointIDs: sharepointIDs{
			SiteID:  site,
			WebID:   web,
			SiteURL: url,
		},
		SiteCollection: siteCollection{Hostname: strings.ToLower(s.host)},
	}
}

// sibling is a different, deterministic site id on the same site collection,
// used for the error entry of an id that was never requested.
func (s siteID) sibling() siteID {
	h := fnv.New128a()
	h.Write([]byte(s.key())) // hash.Hash.Write never returns an error
	sum := h.Sum(nil)
	return siteID{host: s.host, site: s.site, web: formatGUID(sum)}
}

func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
		default:
			return false
		}
	}
	return true
}

func validGUID(g string) bool {
	if len(g) != 36 {
		return false
	}
	for i := 0; i < len(g); i++ {
		c := g[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isHex(c) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// formatGUID renders 16 bytes as a lower-case hyphenated GUID.
func formatGUID(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// siteObject is the JSON shape of a followed site in add answers.
type siteObject struct {
	ID             string         `json:"id"`
	WebURL         string         `json:"webUrl"`
	Name           string         `json:"name"`
	SharepointIDs  sharepointIDs  `json:"sharepointIds"`
	SiteCollection siteCollection `json:"siteCollection"`
}

type sharepointIDs struct {
	SiteID  string `json:"siteId"`
	WebID   string `json:"webId"`
	SiteURL string `json:"siteUrl"`
}

type siteCollection struct {
	Hostname string `json:"hostname"`
}
