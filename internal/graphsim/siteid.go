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
	host, rest, ok1 := strings.Cut(id, ",")
	site, web, ok2 := strings.Cut(rest, ",")
	if !ok1 || !ok2 || strings.IndexByte(web, ',') >= 0 {
		return siteID{}, fmt.Errorf("parse site id %q: want 3 comma-separated parts, got %d: %w", id, strings.Count(id, ",")+1, errSiteID)
	}
	if !validHost(host) {
		return siteID{}, fmt.Errorf("parse site id %q: bad hostname: %w", id, errSiteID)
	}
	for _, g := range [2]string{site, web} {
		if !validGUID(g) {
			return siteID{}, fmt.Errorf("parse site id %q: bad guid %q: %w", id, g, errSiteID)
		}
	}
	return siteID{host: host, site: strings.ToLower(site), web: strings.ToLower(web)}, nil
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

// appendObject appends the JSON of s.object(upper), byte for byte what
// json.Marshal writes (TestAppendObjectMatchesMarshal holds it to that),
// without reflection: add answers are mostly site objects. It relies on
// parseSiteID having admitted only characters JSON needs no escape for.
func (s siteID) appendObject(dst []byte, upper bool) []byte {
	site, web := s.site, s.web
	appendGUID := func(dst []byte, g string) []byte {
		if !upper {
			return append(dst, g...)
		}
		for i := 0; i < len(g); i++ {
			c := g[i]
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
		}
		return dst
	}
	appendLowerHost := func(dst []byte) []byte {
		for i := 0; i < len(s.host); i++ {
			c := s.host[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
		}
		return dst
	}
	appendURL := func(dst []byte) []byte {
		dst = append(dst, "https://"...)
		dst = appendLowerHost(dst)
		dst = append(dst, "/sites/Site-"...)
		return append(dst, web[:8]...)
	}
	dst = append(dst, `{"id":"`...)
	dst = append(dst, s.host...)
	dst = append(dst, ',')
	dst = appendGUID(dst, site)
	dst = append(dst, ',')
	dst = appendGUID(dst, web)
	dst = append(dst, `","webUrl":"`...)
	dst = appendURL(dst)
	dst = append(dst, `","name":"Site-`...)
	dst = append(dst, web[:8]...)
	dst = append(dst, `","sharepointIds":{"siteId":"`...)
	dst = appendGUID(dst, site)
	dst = append(dst, `","webId":"`...)
	dst = appendGUID(dst, web)
	dst = append(dst, `","siteUrl":"`...)
	dst = appendURL(dst)
	dst = append(dst, `"},"siteCollection":{"hostname":"`...)
	dst = appendLowerHost(dst)
	return append(dst, `"}}`...)
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
	for i := 0; i < len(h); i++ {
		switch r := h[i]; {
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
	const digits = "0123456789abcdef"
	var out [36]byte
	j := 0
	for i, c := range b[:16] {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = digits[c>>4], digits[c&0x0f]
		j += 2
	}
	return string(out[:])
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
