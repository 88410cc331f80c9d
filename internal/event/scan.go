package event

import (
	"bytes"
	"encoding/json"

	"github.com/sitefollow/sitefollow/internal/jsonscan"
)

// maxDepth is encoding/json's nesting limit, which the schema validator
// inherits; scanObject applies the same so both refuse the same payloads.
const maxDepth = 10000

// rawFields holds the raw JSON values of the fields Decode knows; nil means
// the field is absent.
type rawFields struct {
	userID, action, siteIDs, siteURLs, id, source, occurredAt []byte
}

func (f *rawFields) set(key string, value []byte) {
	switch key {
	case "userId":
		f.userID = value
	case "action":
		f.action = value
	case "siteIds":
		f.siteIDs = value
	case "siteUrls":
		f.siteURLs = value
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
	i := jsonscan.Space(data, 0)
	if i == len(data) {
		return &InvalidError{Reason: "payload is not JSON"}
	}
	if data[i] != '{' {
		if end, ok := jsonscan.Value(data, i, 0, maxDepth); ok && jsonscan.Space(data, end) == len(data) {
			return &InvalidError{Reason: "payload is not a JSON object, got " + kind(data[i:])}
		}
		return &InvalidError{Reason: "payload is not JSON"}
	}
	end, ok := scanMembers(data, i, f)
	if !ok {
		return &InvalidError{Reason: "payload is not JSON"}
	}
	if jsonscan.Space(data, end) != len(data) {
		return &InvalidError{Reason: "payload has trailing data after the JSON object"}
	}
	return nil
}

// scanMembers validates the top-level object starting at data[i] ('{')
// and returns the index just past it.
func scanMembers(data []byte, i int, f *rawFields) (int, bool) {
	i = jsonscan.Space(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return i, false
		}
		keyStart := i
		var ok bool
		if i, ok = jsonscan.String(data, i); !ok {
			return i, false
		}
		key := data[keyStart+1 : i-1]
		i = jsonscan.Space(data, i)
		if i >= len(data) || data[i] != ':' {
			return i, false
		}
		i = jsonscan.Space(data, i+1)
		valueStart := i
		if i, ok = jsonscan.Value(data, i, 1, maxDepth); !ok {
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
		i = jsonscan.Space(data, i)
		if i >= len(data) {
			return i, false
		}
		switch data[i] {
		case ',':
			i = jsonscan.Space(data, i+1)
		case '}':
			return i + 1, true
		default:
			return i, false
		}
	}
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
