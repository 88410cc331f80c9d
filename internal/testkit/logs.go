package testkit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// LogLine is one JSON log line: its fields, and the line itself for
// messages.
type LogLine struct {
	Fields map[string]any
	Text   string
}

// Level is the line's level field.
func (l LogLine) Level() string { s, _ := l.Fields["level"].(string); return s }

// Message is the line's message field.
func (l LogLine) Message() string { s, _ := l.Fields["message"].(string); return s }

// LogLines parses a consumer's JSON log, failing the test on a line that is
// not a JSON object or that repeats a key (log processors keep only one of
// them). Lines that do not start with '{' (a Go panic, the race detector)
// are skipped.
func LogLines(t *testing.T, logs string) []LogLine {
	t.Helper()
	var out []LogLine
	for i, line := range strings.Split(logs, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		fields, err := objectWithoutRepeats([]byte(line))
		if err != nil {
			t.Errorf("log line %d: %v: %s", i+1, err, line)
			continue
		}
		out = append(out, LogLine{Fields: fields, Text: line})
	}
	return out
}

// objectWithoutRepeats decodes one flat JSON object, refusing a repeated
// top-level key; nested values are decoded as they are.
func objectWithoutRepeats(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	fields := make(map[string]any)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("read key: %w", err)
		}
		key, _ := tok.(string)
		if _, dup := fields[key]; dup {
			return nil, fmt.Errorf("key %q repeated", key)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("read %q: %w", key, err)
		}
		fields[key] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("read end: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("more after the object")
	}
	return fields, nil
}
