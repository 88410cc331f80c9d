package graphsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// errBody classifies request bodies that are not {"value":[{"id":...}]}.
var errBody = errors.New("invalid request body")

// readBody reads at most maxBodyBytes into buf; a larger body is an error.
func readBody(buf *bytes.Buffer, body io.Reader) error {
	if _, err := buf.ReadFrom(io.LimitReader(body, maxBodyBytes+1)); err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if buf.Len() > maxBodyBytes {
		return fmt.Errorf("body larger than %d bytes: %w", maxBodyBytes, errBody)
	}
	return nil
}

// decodeBody returns the ids in request order, or whatever it managed to read
// along with an error for a malformed body. readErr is readBody's error.
// raw is not retained.
func decodeBody(raw []byte, readErr error) ([]string, error) {
	if readErr != nil {
		return nil, readErr
	}
	// One string for the whole body: the ids are substrings of it.
	if ids, ok := scanIDs(string(raw)); ok {
		return ids, nil
	}
	return decodeBodyJSON(raw)
}

// decodeBodyJSON is decodeBody for any body, by encoding/json.
func decodeBodyJSON(raw []byte) ([]string, error) {
	var in struct {
		Value []struct {
			ID *string `json:"id"`
		} `json:"value"`
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, fmt.Errorf("decode body: %w: %w", err, errBody)
	}
	if len(in.Value) == 0 {
		return nil, fmt.Errorf("body has no value entries: %w", errBody)
	}
	ids := make([]string, 0, len(in.Value))
	for i, v := range in.Value {
		if v.ID == nil || *v.ID == "" {
			return ids, fmt.Errorf("value[%d] has no id: %w", i, errBody)
		}
		ids = append(ids, *v.ID)
	}
	return ids, nil
}

// scanIDs reads the body clients actually send, {"value":[{"id":"…"},…]}
// with at least one entry, any JSON whitespace, and ids that are non-empty
// printable ASCII without escapes, and returns the ids as substrings of
// body. It reports false for every other body, valid or not, which
// decodeBodyJSON then decodes: on the bodies scanIDs accepts, both agree
// (FuzzScanIDs holds it to that), so the sim answers exactly as before,
// without encoding/json's reflection and double scan on every call.
func scanIDs(body string) ([]string, bool) {
	i := skipSpace(body, 0)
	i, ok := expect(body, i, `{`)
	if !ok {
		return nil, false
	}
	if i, ok = expect(body, i, `"value"`); !ok {
		return nil, false
	}
	if i, ok = expect(body, i, `:`); !ok {
		return nil, false
	}
	if i, ok = expect(body, i, `[`); !ok {
		return nil, false
	}
	ids := make([]string, 0, len(body)/64+1)
	for {
		if i, ok = expect(body, i, `{`); !ok {
			return nil, false
		}
		if i, ok = expect(body, i, `"id"`); !ok {
			return nil, false
		}
		if i, ok = expect(body, i, `:`); !ok {
			return nil, false
		}
		if i >= len(body) || body[i] != '"' {
			return nil, false
		}
		start := i + 1
		end := start
		for end+8 <= len(body) && plainASCII(load64(body, end)) {
			end += 8
		}
		for end < len(body) && body[end] >= 0x20 && body[end] < 0x80 && body[end] != '"' && body[end] != '\\' {
			end++
		}
		if end == start || end >= len(body) || body[end] != '"' {
			return nil, false
		}
		ids = append(ids, body[start:end])
		i = skipSpace(body, end+1)
		if i, ok = expect(body, i, `}`); !ok {
			return nil, false
		}
		if i < len(body) && body[i] == ']' {
			break
		}
		if i, ok = expect(body, i, `,`); !ok {
			return nil, false
		}
	}
	i = skipSpace(body, i+1)
	if i, ok = expect(body, i, `}`); !ok || i != len(body) {
		return nil, false
	}
	return ids, true
}

// plainASCII reports whether each of the eight bytes in x is ASCII and
// neither a quote, a backslash nor a control character: a run of bytes a
// JSON string holds verbatim and encoding/json decodes unchanged. (The
// "has zero byte" and "has byte less than" bit tricks, exact as yes/no
// answers.)
func plainASCII(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := x ^ (ones * '"')
	backslash := x ^ (ones * '\\')
	special := x | (x-ones*0x20)&^x | (quote-ones)&^quote | (backslash-ones)&^backslash
	return special&highs == 0
}

// load64 reads s[i:i+8] little-endian (the compiler makes it one load).
func load64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// expect consumes token at body[i] and the JSON whitespace after it.
func expect(body string, i int, token string) (int, bool) {
	if !strings.HasPrefix(body[i:], token) {
		return i, false
	}
	return skipSpace(body, i+len(token)), true
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}
