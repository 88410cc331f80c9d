package event

import (
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// The limits below are mirrored by schemas/follow-request.v1.schema.json;
// TestRequestExamples, TestFieldRulesMatchSchema and FuzzDecode keep the
// two in step.
const (
	maxUserIDLen   = 256
	maxHostnameLen = 253
	maxLabelLen    = 63
	maxIDLen       = 256
	maxSourceLen   = 64
	guidLen        = 36
)

// upnLocalPunct lists the punctuation Entra ID allows in the part of a user
// principal name before the "@", less "#": a "#" (as in guest UPNs with
// #EXT#) would end the Graph path, so guests must be addressed by object id.
const upnLocalPunct = "'._!^~-"

// ValidUserID reports whether s can name a user in a Graph path: an Entra
// object id (a GUID, any case) or a user principal name local@domain. It
// refuses "/", "?", "#", "%", "\", "..", whitespace and control characters
// outright, so a user id can never address a different Graph resource even
// if a caller forgot to path-escape it. The error is an *InvalidError for
// the field "userId".
func ValidUserID(s string) error {
	if reason := userIDProblem(s); reason != "" {
		return &InvalidError{Field: "userId", Reason: reason}
	}
	return nil
}

func userIDProblem(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if len(s) > maxUserIDLen {
		return "is longer than " + strconv.Itoa(maxUserIDLen) + " characters"
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, _ := utf8.DecodeRuneInString(s[i:])
			switch {
			case unicode.IsSpace(r):
				return "must not contain whitespace"
			case unicode.IsControl(r):
				return "must not contain control characters"
			}
			return "must contain only ASCII characters, got " + quote(s)
		}
		switch {
		case c == '/' || c == '?' || c == '#' || c == '%' || c == '\\':
			return "must not contain " + strconv.Quote(string(c)) + ", got " + quote(s)
		case c == ' ' || '\t' <= c && c <= '\r':
			return "must not contain whitespace"
		case c < 0x20 || c == 0x7f:
			return "must not contain control characters"
		}
		i++
	}
	if strings.Contains(s, "..") {
		return `must not contain "..", got ` + quote(s)
	}
	if isGUID(s) {
		return ""
	}
	at := strings.IndexByte(s, '@')
	if at < 0 {
		return "must be a GUID or a user principal name (local@domain), got " + quote(s)
	}
	local, domain := s[:at], s[at+1:]
	if strings.IndexByte(domain, '@') >= 0 {
		return `must contain exactly one "@", got ` + quote(s)
	}
	if local == "" {
		return `must have a name before "@", got ` + quote(s)
	}
	for i := 0; i < len(local); i++ {
		if c := local[i]; !isAlnum(c) && strings.IndexByte(upnLocalPunct, c) < 0 {
			return "must have only letters, digits and " + upnLocalPunct + ` before "@", got ` + quote(s)
		}
	}
	if local[0] == '.' || local[len(local)-1] == '.' {
		return `must not start or end the name before "@" with ".", got ` + quote(s)
	}
	if !validDNSName(domain) {
		return `must have a DNS domain after "@", got ` + quote(s)
	}
	if strings.IndexByte(domain, '.') < 0 {
		return `must have a domain with a "." after "@", got ` + quote(s)
	}
	return ""
}

// ValidSiteID reports whether s is a Graph site id "hostname,siteGuid,webGuid"
// (GUIDs in any case). The error is an *InvalidError for the field "siteId".
func ValidSiteID(s string) error {
	if reason := siteIDProblem(s); reason != "" {
		return &InvalidError{Field: "siteId", Reason: reason}
	}
	return nil
}

func siteIDProblem(s string) string {
	host, rest, ok := strings.Cut(s, ",")
	if !ok {
		return "must have the form hostname,siteGuid,webGuid, got " + quote(s)
	}
	site, web, ok := strings.Cut(rest, ",")
	if !ok || strings.IndexByte(web, ',') >= 0 {
		return "must have the form hostname,siteGuid,webGuid, got " + quote(s)
	}
	if len(host) > maxHostnameLen || !validDNSName(host) {
		return "must start with a DNS hostname, got " + quote(s)
	}
	if !isGUID(site) {
		return "must have a GUID as site id (second part), got " + quote(s)
	}
	if !isGUID(web) {
		return "must have a GUID as web id (third part), got " + quote(s)
	}
	return ""
}

// validDNSName reports whether s is one or more dot-separated DNS labels of
// letters, digits and inner hyphens. Callers check the total length.
func validDNSName(s string) bool {
	if s == "" {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			if c := s[i]; !isAlnum(c) && c != '-' {
				return false
			}
			continue
		}
		label := s[start:i]
		if label == "" || len(label) > maxLabelLen || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		start = i + 1
	}
	return true
}

// isGUID reports whether s is 8-4-4-4-12 hexadecimal digits, any case.
func isGUID(s string) bool {
	if len(s) != guidLen || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	return allHex(s[:8]) && allHex(s[9:13]) && allHex(s[14:18]) && allHex(s[19:23]) && allHex(s[24:])
}

func allHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return c-'0' < 10 || (c|0x20)-'a' < 6
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// validTimestamp reports whether s is an RFC 3339 date-time in the shape
// YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM), upper-case "T" and "Z". The
// shape and offset checks come first because time.Parse alone is more
// lenient (it falls back to its general layout parser); time.Parse then
// checks the ranges of date and time.
func validTimestamp(s string) bool {
	const base = len("2006-01-02T15:04:05")
	if len(s) < base+1 {
		return false
	}
	for i := 0; i < base; i++ {
		c := s[i]
		switch i {
		case 4, 7:
			if c != '-' {
				return false
			}
		case 10:
			if c != 'T' {
				return false
			}
		case 13, 16:
			if c != ':' {
				return false
			}
		default:
			if !isDigit(c) {
				return false
			}
		}
	}
	rest := s[base:]
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && isDigit(rest[n]) {
			n++
		}
		if n == 1 {
			return false
		}
		rest = rest[n:]
	}
	switch {
	case rest == "Z":
	case len(rest) == len("+07:00") && (rest[0] == '+' || rest[0] == '-') &&
		isDigit(rest[1]) && isDigit(rest[2]) && rest[3] == ':' && isDigit(rest[4]) && isDigit(rest[5]):
		// time.Parse's fallback layout parser takes offsets like +24:00.
		if rest[1:3] > "23" || rest[4:6] > "59" {
			return false
		}
	default:
		return false
	}
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}

// quote renders a rejected value for an error message, cut short so that a
// hostile payload cannot blow up logs.
func quote(s string) string {
	const max = 80
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}
