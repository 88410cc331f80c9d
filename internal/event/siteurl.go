package event

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/sitefollow/sitefollow/internal/jsonscan"
)

// Limits of siteUrls, mirrored by schemas/follow-request.v1.schema.json.
// Each URL costs a Graph GET when it is not cached, so an event carries far
// fewer of them than site ids.
const (
	// MaxSiteURLs caps siteUrls per event.
	MaxSiteURLs = 20
	// MaxSiteURLLen caps one site URL, in characters.
	MaxSiteURLLen = 1024
)

// CodeSiteNotFound is the dead-letter code of a site URL that Graph does not
// resolve to a site (404): the URL is wrong, or the site was deleted.
const CodeSiteNotFound = "siteNotFound"

const httpsPrefix = "https://"

// ValidSiteURL reports whether s is a site URL a request may carry:
// "https://" (lower case), a DNS hostname (no port, no user part), then an
// optional server-relative path of "/"-separated segments. The path must
// hold no whitespace, control characters, "?" (a query), "#" (a fragment)
// or "\"; "%" only as an escape of two hex digits, never "%2E" (a dot); and
// no segment may start with ".", so no "." or ".." segment can change the
// Graph path the URL is resolved through. The error is an *InvalidError for
// the field "siteUrl".
func ValidSiteURL(s string) error {
	if reason := siteURLProblem(s); reason != "" {
		return &InvalidError{Field: "siteUrl", Reason: reason}
	}
	return nil
}

func siteURLProblem(s string) string {
	if len(s) > MaxSiteURLLen && utf8.RuneCountInString(s) > MaxSiteURLLen {
		return "is longer than " + strconv.Itoa(MaxSiteURLLen) + " characters"
	}
	rest, ok := strings.CutPrefix(s, httpsPrefix)
	if !ok {
		return `must start with "https://", got ` + quote(s)
	}
	host, path, _ := strings.Cut(rest, "/")
	if host == "" {
		return "must name a host after https://, got " + quote(s)
	}
	if !validDNSName(host) {
		return "must have a DNS hostname (no port, no user) after https://, got " + quote(s)
	}
	if len(rest) == len(host) {
		return ""
	}
	segStart := true
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '/':
			segStart = true
			continue
		case c == '?':
			return "must not have a query (?), got " + quote(s)
		case c == '#':
			return "must not have a fragment (#), got " + quote(s)
		case c == '\\':
			return `must not contain "\", got ` + quote(s)
		case c <= ' ' || c == 0x7f:
			return "must not contain whitespace or control characters, got " + quote(s)
		case c == '.' && segStart:
			return `must not have a path segment starting with ".", got ` + quote(s)
		case c == '%':
			if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
				return `must use "%" only as an escape of two hex digits, got ` + quote(s)
			}
			if path[i+1] == '2' && path[i+2]|0x20 == 'e' {
				return `must not escape "." as %2E, got ` + quote(s)
			}
			i += 2
		}
		segStart = false
	}
	return ""
}

// SiteURLKey is the canonical form of a valid site URL, for caching and
// comparison: the hostname in lower case (DNS names are case-insensitive)
// and no trailing "/" (https://h/sites/a/ is https://h/sites/a). The path
// keeps its case and its escapes as given.
func SiteURLKey(u string) string {
	rest := strings.TrimPrefix(u, httpsPrefix)
	host, path, _ := strings.Cut(rest, "/")
	path = strings.TrimRight(path, "/")
	if path == "" {
		return httpsPrefix + strings.ToLower(host)
	}
	return httpsPrefix + strings.ToLower(host) + "/" + path
}

// SplitSiteURL returns the hostname and the server-relative path segments
// (still escaped as given, empty ones dropped) of a valid site URL; no
// segments means the host's root site.
func SplitSiteURL(u string) (host string, segments []string) {
	rest := strings.TrimPrefix(u, httpsPrefix)
	host, path, _ := strings.Cut(rest, "/")
	for seg := range strings.SplitSeq(path, "/") {
		if seg != "" {
			segments = append(segments, seg)
		}
	}
	return host, segments
}

// siteURLs decodes and validates the siteUrls array and drops repeats
// (compared with SiteURLKey).
func siteURLs(raw []byte) ([]string, error) {
	const field = "siteUrls"
	if raw[0] != '[' {
		return nil, &InvalidError{Field: field, Reason: "must be an array of site URLs, got " + kind(raw)}
	}
	i := jsonscan.Space(raw, 1)
	if raw[i] == ']' {
		return nil, &InvalidError{Field: field, Reason: "must not be empty"}
	}
	var urls []string
	for n := 0; ; n++ {
		if n == MaxSiteURLs {
			return nil, &InvalidError{Field: field, Reason: "must not have more than " + strconv.Itoa(MaxSiteURLs) + " site URLs"}
		}
		f := field + "[" + strconv.Itoa(n) + "]"
		if raw[i] != '"' {
			return nil, &InvalidError{Field: f, Reason: "must be a string, got " + kind(raw[i:])}
		}
		end := endOfString(raw, i)
		u, ok := jsonString(raw[i:end])
		if !ok {
			return nil, badString(f)
		}
		if reason := siteURLProblem(u); reason != "" {
			return nil, &InvalidError{Field: f, Reason: reason}
		}
		urls = append(urls, u)
		i = jsonscan.Space(raw, end)
		if raw[i] == ']' {
			return dedupeURLs(urls), nil
		}
		i = jsonscan.Space(raw, i+1)
	}
}

// dedupeURLs keeps the first of URLs equal under SiteURLKey; at most
// MaxSiteURLs, so pairwise.
func dedupeURLs(urls []string) []string {
	out := urls[:0]
next:
	for _, u := range urls {
		k := SiteURLKey(u)
		for _, kept := range out {
			if SiteURLKey(kept) == k {
				continue next
			}
		}
		out = append(out, u)
	}
	return out
}
