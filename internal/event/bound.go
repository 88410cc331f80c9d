package event

import (
	"bytes"
	"encoding/json"
	"maps"
	"strings"
	"unicode/utf8"
)

// Bounds every dead letter keeps to, whatever the request or Graph sent: a
// dead letter must always fit in one NATS message, or the request it is
// about could never be settled.
const (
	// MaxTextBytes caps the short text fields (userId, action, siteId,
	// error.code, requestId, clientRequestId, origin.subject).
	MaxTextBytes = 1 << 10
	// MaxMessageBytes caps error.message.
	MaxMessageBytes = 8 << 10
	// MaxPayloadBytes caps the event or raw payload a dead letter keeps.
	MaxPayloadBytes = 32 << 10
)

// CodeUnspecified is the code of a dead letter whose failure came without
// one (a Graph error object with no code): every dead letter needs a code.
const CodeUnspecified = "unspecifiedError"

// truncMark ends every text field that was cut, so a reader sees the cut
// without consulting Truncated.
const truncMark = "…"

// SetPayload records the payload of the message d is about: as Event when it
// is a JSON object in valid UTF-8 of at most MaxPayloadBytes, so the dead
// letter stays readable and can be replayed as is, and otherwise as
// RawPayload, cut to MaxPayloadBytes (the cut is recorded in Truncated). It
// copies what it keeps, since message buffers may be reused once the
// message is acknowledged.
func (d *DeadLetter) SetPayload(data []byte) {
	if obj := trimSpace(data); len(obj) > 0 && len(obj) <= MaxPayloadBytes && obj[0] == '{' && utf8.Valid(obj) && json.Valid(obj) {
		d.Event = json.RawMessage(bytes.Clone(obj))
		d.RawPayload = nil
		return
	}
	d.Event = nil
	if len(data) > MaxPayloadBytes {
		d.truncated("rawPayload", len(data))
		data = data[:MaxPayloadBytes]
	}
	d.RawPayload = bytes.Clone(data)
}

// SetPayloadPrefix is SetPayload for a payload of which only prefix was
// kept (at most MaxPayloadBytes) of total bytes: when anything is missing,
// it goes to RawPayload and the cut is recorded.
func (d *DeadLetter) SetPayloadPrefix(prefix []byte, total int) {
	if total <= len(prefix) {
		d.SetPayload(prefix)
		return
	}
	d.Event = nil
	d.RawPayload = bytes.Clone(prefix)
	d.truncated("rawPayload", total)
}

// NarrowedEvent is r as a request for site alone: what a per-site dead
// letter carries instead of the whole event, so a dead letter per rejected
// site does not repeat every other site (Narrowed says so; the origin
// still locates the full event). Republished, it replays that one site.
func NarrowedEvent(r Request, site string) json.RawMessage {
	r.SiteIDs, r.SiteURLs = []string{site}, nil
	return marshalNarrowed(r)
}

// NarrowedURLEvent is r as a request for the site at url alone, as
// NarrowedEvent is for a site id: what a siteNotFound dead letter carries.
func NarrowedURLEvent(r Request, url string) json.RawMessage {
	r.SiteIDs, r.SiteURLs = nil, []string{url}
	return marshalNarrowed(r)
}

func marshalNarrowed(r Request) json.RawMessage {
	data, err := json.Marshal(r)
	if err != nil {
		// Strings and a slice of strings always marshal.
		panic("event: narrowed event: " + err.Error())
	}
	return data
}

// Fit returns d bounded so that it is always encodable and its encoding
// stays within limit bytes (limit ≤ 0 means only the fixed caps): a missing
// code becomes CodeUnspecified, text fields are cut at a rune boundary and
// end in "…", and an event or payload that does not fit is kept only as a
// prefix in RawPayload. Every cut is recorded in Truncated with the field's
// original length in bytes; the text that remains is valid UTF-8.
func (d DeadLetter) Fit(limit int) DeadLetter {
	if d.Truncated != nil {
		d.Truncated = maps.Clone(d.Truncated)
	}
	if d.Error.Code == "" {
		d.Error.Code = CodeUnspecified
	}
	for _, f := range []struct {
		name string
		s    *string
		max  int
	}{
		{"userId", &d.UserID, MaxTextBytes},
		{"siteId", &d.SiteID, MaxTextBytes},
		{"siteUrl", &d.SiteURL, MaxSiteURLLen * utf8.UTFMax},
		{"error.code", &d.Error.Code, MaxTextBytes},
		{"error.message", &d.Error.Message, MaxMessageBytes},
		{"error.requestId", &d.Error.RequestID, MaxTextBytes},
		{"error.clientRequestId", &d.Error.ClientRequestID, MaxTextBytes},
		{"origin.subject", &d.Origin.Subject, MaxTextBytes},
	} {
		if n := len(*f.s); n > f.max {
			*f.s = Truncate(*f.s, f.max)
			d.truncated(f.name, n)
		}
		*f.s = strings.ToValidUTF8(*f.s, "\uFFFD")
	}
	if a := string(d.Action); len(a) > MaxTextBytes || !utf8.ValidString(a) {
		d.truncated("action", len(a))
		d.Action = Action(strings.ToValidUTF8(Truncate(a, MaxTextBytes), "\uFFFD"))
	}
	if d.Event != nil && (len(d.Event) > MaxPayloadBytes || !utf8.Valid(d.Event)) {
		d.RawPayload, d.Event = d.Event, nil
	}
	if len(d.RawPayload) > MaxPayloadBytes {
		d.truncated("rawPayload", len(d.RawPayload))
		d.RawPayload = d.RawPayload[:MaxPayloadBytes]
	}
	if limit <= 0 {
		return d
	}
	// What the payload may take: the limit less everything else.
	bare := d
	bare.Event, bare.RawPayload = nil, nil
	base, err := json.Marshal(bare)
	if err != nil {
		return d
	}
	room := limit - len(base) - 64 // the payload's key, quotes and a "truncated" entry
	if d.Event != nil && len(d.Event) > room {
		d.RawPayload, d.Event = d.Event, nil
	}
	if most := max(room, 0) / 4 * 3; len(d.RawPayload) > most {
		d.truncated("rawPayload", len(d.RawPayload))
		d.RawPayload = d.RawPayload[:most]
	}
	return d
}

// truncated records that field was cut from n bytes, keeping the first
// record: a field cut twice was still n bytes to begin with.
func (d *DeadLetter) truncated(field string, n int) {
	if d.Truncated == nil {
		d.Truncated = make(map[string]int, 1)
	}
	if _, ok := d.Truncated[field]; !ok {
		d.Truncated[field] = n
	}
}

// Truncate cuts s to at most max bytes at a rune boundary, ending it in "…"
// when it cut anything, for text from outside that goes into logs, headers
// and dead letters.
func Truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - len(truncMark)
	if cut < 0 {
		return s[:0]
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncMark
}
