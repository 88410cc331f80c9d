package event

import (
	"bytes"
	"encoding/json"
	"github.com/sitefollow/sitefollow/internal/jsonscan"
	"strconv"
	"unicode/utf8"
)

// Decoder decodes and validates request events. It is the one place where
// events are decoded, so every consumer path applies the same rules, and
// those rules are the ones published in schemas/follow-request.v1.schema.json.
type Decoder struct {
	// MaxSites caps the number of siteIds in one event, counted before
	// duplicates are removed. Zero or less means DefaultMaxSites.
	MaxSites int
}

// Decode decodes one event and validates every field. Every error is an
// *InvalidError naming the field and the reason.
//
// The payload must be a single JSON object; trailing data is refused.
// Unknown fields are ignored. Keys match exactly (unlike encoding/json's
// case-insensitive matching), so "UserId" is an unknown field, as it is to a
// JSON Schema validator. Where a key repeats, the last value wins, again as
// in a JSON Schema validator. A null optional field counts as absent.
//
// An event names its sites by id (siteIds), by URL (siteUrls), or both; at
// least one of the two must be present, and each present one non-empty.
// Site ids repeated within one event (compared with SiteKey), and site URLs
// (compared with SiteURLKey), carry one intent, so they are kept once, at
// their first position, rather than refused.
//
// Decode scans the payload by hand rather than through encoding/json's
// reflection: it is several times faster on the consumer's hot path and
// makes key matching exact. TestRequestExamples, TestFieldRulesMatchSchema
// and the fuzz tests hold it to encoding/json and to the schema.
func (d Decoder) Decode(data []byte) (Request, error) {
	maxSites := d.MaxSites
	if maxSites <= 0 {
		maxSites = DefaultMaxSites
	}
	var f rawFields
	if err := scanObject(data, &f); err != nil {
		return Request{}, err
	}

	var req Request
	var err error
	if req.UserID, err = requiredString(f.userID, "userId"); err != nil {
		return Request{}, err
	}
	if err := ValidUserID(req.UserID); err != nil {
		return Request{}, err
	}
	if req.Action, err = action(f.action); err != nil {
		return Request{}, err
	}
	if f.siteIDs == nil && f.siteURLs == nil {
		return Request{}, &InvalidError{Field: "siteIds", Reason: "is required unless siteUrls names the sites"}
	}
	if f.siteIDs != nil {
		if req.SiteIDs, err = siteIDs(f.siteIDs, maxSites); err != nil {
			return Request{}, err
		}
	}
	if f.siteURLs != nil {
		if req.SiteURLs, err = siteURLs(f.siteURLs); err != nil {
			return Request{}, err
		}
	}
	if req.ID, _, err = optionalString(f.id, "id", maxIDLen); err != nil {
		return Request{}, err
	}
	if req.Source, _, err = optionalString(f.source, "source", maxSourceLen); err != nil {
		return Request{}, err
	}
	var present bool
	if req.OccurredAt, present, err = optionalString(f.occurredAt, "occurredAt", 0); err != nil {
		return Request{}, err
	}
	if present && !validTimestamp(req.OccurredAt) {
		return Request{}, &InvalidError{Field: "occurredAt", Reason: "must be an RFC 3339 date-time such as 2024-05-01T12:00:00Z, got " + quote(req.OccurredAt)}
	}
	return req, nil
}

func requiredString(raw []byte, field string) (string, error) {
	if raw == nil {
		return "", &InvalidError{Field: field, Reason: "is required"}
	}
	if raw[0] != '"' {
		return "", &InvalidError{Field: field, Reason: "must be a string, got " + kind(raw)}
	}
	s, ok := jsonString(raw)
	if !ok {
		return "", badString(field)
	}
	return s, nil
}

// action decodes the action field, sparing an allocation for the constants.
func action(raw []byte) (Action, error) {
	switch string(raw) {
	case `"follow"`:
		return Follow, nil
	case `"unfollow"`:
		return Unfollow, nil
	}
	s, err := requiredString(raw, "action")
	if err != nil {
		return "", err
	}
	switch a := Action(s); a {
	case Follow, Unfollow:
		return a, nil
	}
	return "", &InvalidError{Field: "action", Reason: `must be "follow" or "unfollow", got ` + quote(s)}
}

// optionalString decodes an optional string field, reporting whether it was
// present and not null; maxLen, when positive, caps its length in characters
// (as JSON Schema's maxLength counts them).
func optionalString(raw []byte, field string, maxLen int) (string, bool, error) {
	if raw == nil || raw[0] == 'n' {
		return "", false, nil
	}
	if raw[0] != '"' {
		return "", false, &InvalidError{Field: field, Reason: "must be a string, got " + kind(raw)}
	}
	s, ok := jsonString(raw)
	if !ok {
		return "", false, badString(field)
	}
	if maxLen > 0 && len(s) > maxLen && utf8.RuneCountInString(s) > maxLen {
		return "", false, &InvalidError{Field: field, Reason: "is longer than " + strconv.Itoa(maxLen) + " characters"}
	}
	return s, true, nil
}

// siteIDs decodes and validates the siteIds array and drops repeats.
func siteIDs(raw []byte, maxSites int) ([]string, error) {
	const field = "siteIds"
	if raw[0] != '[' {
		return nil, &InvalidError{Field: field, Reason: "must be an array of site ids, got " + kind(raw)}
	}
	i := jsonscan.Space(raw, 1)
	if raw[i] == ']' {
		return nil, &InvalidError{Field: field, Reason: "must not be empty"}
	}
	// A site id takes at least 78 bytes of JSON ("h,<guid>,<guid>",).
	ids := make([]string, 0, min(maxSites, len(raw)/78+1))
	for n := 0; ; n++ {
		if n == maxSites {
			return nil, &InvalidError{Field: field, Reason: "must not have more than " + strconv.Itoa(maxSites) + " site ids"}
		}
		if raw[i] != '"' {
			return nil, &InvalidError{Field: siteField(n), Reason: "must be a string, got " + kind(raw[i:])}
		}
		end := endOfString(raw, i)
		id, ok := jsonString(raw[i:end])
		if !ok {
			return nil, badString(siteField(n))
		}
		if reason := siteIDProblem(id); reason != "" {
			return nil, &InvalidError{Field: siteField(n), Reason: reason}
		}
		ids = append(ids, id)
		i = jsonscan.Space(raw, end)
		if raw[i] == ']' {
			return dedupe(ids), nil
		}
		i = jsonscan.Space(raw, i+1)
	}
}

func siteField(n int) string { return "siteIds[" + strconv.Itoa(n) + "]" }

// dedupe keeps the first of site ids that are equal under SiteKey. Short
// lists, the common case, are compared pairwise to spare a map.
func dedupe(ids []string) []string {
	const pairwiseMax = 32
	out := ids[:0]
	if len(ids) <= pairwiseMax {
	next:
		for _, id := range ids {
			for _, kept := range out {
				if sameSite(id, kept) {
					continue next
				}
			}
			out = append(out, id)
		}
		return out
	}
	seen := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		k := SiteKey(id)
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		out = append(out, id)
	}
	return out
}

// sameSite reports whether two valid (hence ASCII) site ids are equal under
// SiteKey. It compares from the end, where the GUIDs of different sites
// differ at once, rather than from the hostname they often share.
func sameSite(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := len(a) - 1; i >= 0; i-- {
		if a[i] != b[i] && lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// jsonString decodes a JSON string token, copying it straight when it
// holds no escapes. It reports false only for a malformed token, which
// scanObject has already ruled out.
func jsonString(raw []byte) (string, bool) {
	body := raw[1 : len(raw)-1]
	if bytes.IndexByte(body, '\\') < 0 && utf8.Valid(body) {
		return string(body), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

func badString(field string) error {
	return &InvalidError{Field: field, Reason: "is not a valid JSON string"}
}

// kind names the type of the JSON value that raw starts with.
func kind(raw []byte) string {
	switch raw[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}
