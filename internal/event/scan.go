package event

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
)

// maxDepth is encoding/json's nesting limit, which the schema validator
// inherits; scanObject applies the same so both refuse the same payloads.
const maxDepth = 10000

// rawFields holds the raw JSON values of the fields Decode knows; nil means
// the field is absent.
type rawFields struct {
	userID, action, siteIDs, id, source, occurredAt []byte
}

func (f *rawFields) set(key string, value []byte) {
	switch key {
	case "userId":
		f.userID = value
	case "action":
		f.action = value
	case "siteIds":
		f.siteIDs = value
	case "id":
		f.id = value
	case "source":
		f.source = value
	case "occurredAt":
		f.occurredAt = value
	}
}

// scanObject checks that data is exactly one well-formed JSON object and,
// when f is not nil, records the raw values of its known members (the last
// of repeated keys wins). It is a validating scanner written for this one
// job: it accepts exactly what json.Valid accepts (FuzzScanObject holds it
// to that) at a fraction of the cost, and spares a second pass to find
// the members. Later steps may rely on the recorded values being
// well-formed.
func scanObject(data []byte, f *rawFields) error {
	if len(data) == 0 {
		return &InvalidError{Reason: "payload is empty"}
	}
	i := skipSpace(data, 0)
	if i == len(data) {
		return &InvalidError{Reason: "payload is not JSON"}
	}
	if data[i] != '{' {
		if end, ok := skipValue(data, i, 0); ok && skipSpace(data, end) == len(data) {
			return &InvalidError{Reason: "payload is not a JSON object, got " + kind(data[i:])}
		}
		return &InvalidError{Reason: "payload is not JSON"}
	}
	end, ok := scanMembers(data, i, f)
	if !ok {
		return &InvalidError{Reason: "payload is not JSON"}
	}
	if skipSpace(data, end) != len(data) {
		return &InvalidError{Reason: "payload has trailing data after the JSON object"}
	}
	return nil
}

// scanMembers validates the top-level object starting at data[i] ('{')
// and returns the index just past it.
func scanMembers(data []byte, i int, f *rawFields) (int, bool) {
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return i, false
		}
		keyStart := i
		var ok bool
		if i, ok = skipString(data, i); !ok {
			return i, false
		}
		key := data[keyStart+1 : i-1]
		i = skipSpace(data, i)
		if i >= len(data) || data[i] != ':' {
			return i, false
		}
		i = skipSpace(data, i+1)
		valueStart := i
		if i, ok = skipValue(data, i, 1); !ok {
			return i, false
		}
		if f != nil {
			value := data[valueStart:i]
			if bytes.IndexByte(key, '\\') < 0 {
				f.set(string(key), value)
			} else {
				var k string
				if err := json.Unmarshal(data[keyStart:keyStart+len(key)+2], &k); err != nil {
					return i, false
				}
				f.set(k, value)
			}
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return i, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// skipValue validates the JSON value starting at data[i], inside depth
// open objects and arrays, and returns the index just past it.
func skipValue(data []byte, i, depth int) (int, bool) {
	if i >= len(data) {
		return i, false
	}
	switch c := data[i]; c {
	case '"':
		return skipString(data, i)
	case '{', '[':
		if depth >= maxDepth {
			return i, false
		}
		return skipContainer(data, i, depth+1)
	case 't':
		return skipLiteral(data, i, "true")
	case 'f':
		return skipLiteral(data, i, "false")
	case 'n':
		return skipLiteral(data, i, "null")
	default:
		if c == '-' || isDigit(c) {
			return skipNumber(data, i)
		}
		return i, false
	}
}

// skipContainer validates the object or array starting at data[i], which
// makes depth open containers.
func skipContainer(data []byte, i, depth int) (int, bool) {
	closer := byte(']')
	if data[i] == '{' {
		closer = '}'
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == closer {
		return i + 1, true
	}
	for {
		var ok bool
		if closer == '}' {
			if i >= len(data) || data[i] != '"' {
				return i, false
			}
			if i, ok = skipString(data, i); !ok {
				return i, false
			}
			i = skipSpace(data, i)
			if i >= len(data) || data[i] != ':' {
				return i, false
			}
			i = skipSpace(data, i+1)
		}
		if i, ok = skipValue(data, i, depth); !ok {
			return i, false
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return i, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case closer:
			return i + 1, true
		default:
			return i, false
		}
	}
}

// skipString validates the string token starting at data[i] (a quote) and
// returns the index just past it. Like encoding/json it refuses raw control
// characters and bad escapes but lets invalid UTF-8 through.
func skipString(data []byte, i int) (int, bool) {
	i++
	for i < len(data) {
		// Skip eight plain bytes at a time; string bodies are most of a
		// payload.
		for i+8 <= len(data) && plainWord(binary.LittleEndian.Uint64(data[i:])) {
			i += 8
		}
		if i >= len(data) {
			break
		}
		c := data[i]
		switch {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return i, false
		case c == '\\':
			i++
			if i >= len(data) {
				return i, false
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+4 >= len(data) || !isHex(data[i+1]) || !isHex(data[i+2]) || !isHex(data[i+3]) || !isHex(data[i+4]) {
					return i, false
				}
				i += 5
			default:
				return i, false
			}
		default:
			i++
		}
	}
	return i, false
}

// plainWord reports whether none of the eight bytes in x is a quote, a
// backslash or a control character, the bytes that end a plain run in a
// JSON string (the "has zero byte" and "has byte less than" bit tricks,
// exact as yes/no answers).
func plainWord(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := x ^ (ones * '"')
	backslash := x ^ (ones * '\\')
	special := (x-ones*0x20)&^x | (quote-ones)&^quote | (backslash-ones)&^backslash
	return special&highs == 0
}

func skipLiteral(data []byte, i int, lit string) (int, bool) {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// skipNumber validates -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func skipNumber(data []byte, i int) (int, bool) {
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && isDigit(data[i]):
		i = skipDigits(data, i)
	default:
		return i, false
	}
	if i < len(data) && data[i] == '.' {
		i++
		if i >= len(data) || !isDigit(data[i]) {
			return i, false
		}
		i = skipDigits(data, i)
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) || !isDigit(data[i]) {
			return i, false
		}
		i = skipDigits(data, i)
	}
	return i, true
}

func skipDigits(data []byte, i int) int {
	for i < len(data) && isDigit(data[i]) {
		i++
	}
	return i
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// endOfString returns the index just past the string token that starts at
// data[i] (a quote), which is known to be well-formed: it only has to find
// the first quote not escaped by an odd run of backslashes.
func endOfString(data []byte, i int) int {
	i++
	for {
		q := bytes.IndexByte(data[i:], '"')
		if q < 0 {
			return len(data)
		}
		j := i + q
		k := j
		for k > i && data[k-1] == '\\' {
			k--
		}
		if (j-k)%2 == 0 {
			return j + 1
		}
		i = j + 1
	}
}
