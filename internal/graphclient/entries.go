package graphclient

import "github.com/sitefollow/sitefollow/internal/jsonscan"

// scanDepth bounds nesting in scanEntries; deeper answers are left to
// encoding/json, which allows more.
const scanDepth = 128

// scanEntries decodes the "value" entries of a 2xx answer exactly as
// json.Unmarshal into struct{ Value []entry } does, for the answers Graph
// sends, at a fraction of the cost: add answers are mostly site objects the
// client only needs to skip. It reports false for every answer it is not
// certain to decode identically (escapes or non-ASCII in the fields it
// keeps, repeated or differently-cased field names, nulls or unexpected
// types where entry has fields, very deep nesting, invalid JSON), and the
// caller then uses encoding/json, so the verdict on every answer is
// encoding/json's. FuzzScanEntries holds it to that. The strings it
// returns are substrings of data.
func scanEntries(data string) ([]entry, bool) {
	sc := scanner{data: data}
	var entries []entry
	haveValue := false
	ok := sc.object(func(key string) bool {
		switch {
		case key == "value" && !haveValue:
			haveValue = true
			var ok bool
			entries, ok = sc.entries()
			return ok
		case foldsTo(key, "value"):
			return false
		}
		return sc.skipValue(1)
	})
	if !ok || sc.skipSpace() != len(data) {
		return nil, false
	}
	return entries, true
}

// scanner walks a JSON text; every method reports false on anything it does
// not accept, leaving pos wherever it stopped.
type scanner struct {
	data string
	pos  int
}

func (s *scanner) skipSpace() int {
	s.pos = jsonscan.Space(s.data, s.pos)
	return s.pos
}

// consume skips whitespace and then c.
func (s *scanner) consume(c byte) bool {
	if s.skipSpace() < len(s.data) && s.data[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

// peek skips whitespace and returns the next byte, or 0 at the end.
func (s *scanner) peek() byte {
	if s.skipSpace() < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

// object reads an object, calling member with each key when the scanner
// stands just after the key's colon; member must consume the value.
func (s *scanner) object(member func(key string) bool) bool {
	if !s.consume('{') {
		return false
	}
	if s.peek() == '}' {
		s.pos++
		return true
	}
	for {
		if s.peek() != '"' {
			return false
		}
		key, ok := s.plainString()
		if !ok || !s.consume(':') || !member(key) {
			return false
		}
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return true
		default:
			return false
		}
	}
}

// plainString reads a string token that needs no decoding: printable ASCII
// without escapes, which encoding/json returns unchanged.
func (s *scanner) plainString() (string, bool) {
	if s.peek() != '"' {
		return "", false
	}
	start := s.pos + 1
	i := start
	for i+8 <= len(s.data) && jsonscan.PlainASCII(jsonscan.Load64(s.data, i)) {
		i += 8
	}
	for i < len(s.data) {
		c := s.data[i]
		switch {
		case c == '"':
			s.pos = i + 1
			return s.data[start:i], true
		case c < 0x20 || c >= 0x80 || c == '\\':
			return "", false
		}
		i++
	}
	return "", false
}

// entries reads the "value" array.
func (s *scanner) entries() ([]entry, bool) {
	if !s.consume('[') {
		return nil, false
	}
	// encoding/json leaves an empty array as a non-nil empty slice.
	entries := make([]entry, 0, 4+len(s.data)/256)
	if s.peek() == ']' {
		s.pos++
		return entries, true
	}
	for {
		var en entry
		if !s.entry(&en) {
			return nil, false
		}
		entries = append(entries, en)
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return entries, true
		default:
			return nil, false
		}
	}
}

func (s *scanner) entry(en *entry) bool {
	var haveID bool
	return s.object(func(key string) bool {
		switch {
		case key == "id" && !haveID:
			haveID = true
			var ok bool
			en.ID, ok = s.plainString()
			return ok
		case key == "error" && en.Error == nil:
			en.Error = new(graphError)
			return s.graphError(en.Error)
		case foldsTo(key, "id", "error"):
			return false
		}
		return s.skipValue(3)
	})
}

func (s *scanner) graphError(g *graphError) bool {
	var haveCode, haveMessage bool
	return s.object(func(key string) bool {
		var ok bool
		switch {
		case key == "code" && !haveCode:
			haveCode = true
			g.Code, ok = s.plainString()
			return ok
		case key == "message" && !haveMessage:
			haveMessage = true
			g.Message, ok = s.plainString()
			return ok
		case key == "innerError" && g.InnerError == nil:
			g.InnerError = new(innerError)
			return s.innerError(g.InnerError, 4)
		case foldsTo(key, "code", "message", "innerError"):
			return false
		}
		return s.skipValue(4)
	})
}

func (s *scanner) innerError(in *innerError, depth int) bool {
	if depth > scanDepth {
		return false
	}
	var haveCode, haveRequestID, haveClientRequestID bool
	return s.object(func(key string) bool {
		var ok bool
		switch {
		case key == "code" && !haveCode:
			haveCode = true
			in.Code, ok = s.plainString()
			return ok
		case key == "request-id" && !haveRequestID:
			haveRequestID = true
			in.RequestID, ok = s.plainString()
			return ok
		case key == "client-request-id" && !haveClientRequestID:
			haveClientRequestID = true
			in.ClientRequestID, ok = s.plainString()
			return ok
		case key == "innerError" && in.InnerError == nil:
			in.InnerError = new(innerError)
			return s.innerError(in.InnerError, depth+1)
		case foldsTo(key, "code", "request-id", "client-request-id", "innerError"):
			return false
		}
		return s.skipValue(depth + 1)
	})
}

// foldsTo reports whether key could name one of fields for encoding/json
// other than by an exact match: equal ignoring case, and (to be safe
// whichever matching rules encoding/json applies) ignoring '-' and '_' too.
func foldsTo(key string, fields ...string) bool {
	for _, f := range fields {
		if foldedEqual(key, f) {
			return true
		}
	}
	return false
}

func foldedEqual(a, b string) bool {
	i, j := 0, 0
	for {
		for i < len(a) && (a[i] == '-' || a[i] == '_') {
			i++
		}
		for j < len(b) && (b[j] == '-' || b[j] == '_') {
			j++
		}
		if i == len(a) || j == len(b) {
			return i == len(a) && j == len(b)
		}
		if lowerASCII(a[i]) != lowerASCII(b[j]) {
			return false
		}
		i++
		j++
	}
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// skipValue validates and skips one value, which sits inside depth open
// objects and arrays. A skipped value is one encoding/json ignores too, so
// any valid JSON will do.
func (s *scanner) skipValue(depth int) bool {
	end, ok := jsonscan.Value(s.data, s.skipSpace(), depth, scanDepth)
	if ok {
		s.pos = end
	}
	return ok
}
