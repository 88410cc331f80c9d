package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// wantScan is what scanObject must decide, derived from encoding/json: nil
// for one JSON object, else the reason.
func wantScan(data []byte) string {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	switch {
	case len(data) == 0:
		return "payload is empty"
	case json.Valid(data) && trimmed[0] == '{':
		return ""
	case json.Valid(data):
		return "payload is not a JSON object, got " + kind(trimmed)
	}
	var first json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if len(trimmed) > 0 && trimmed[0] == '{' && dec.Decode(&first) == nil {
		return "payload has trailing data after the JSON object"
	}
	return "payload is not JSON"
}

func checkScan(t *testing.T, data []byte) {
	t.Helper()
	err := scanObject(data, nil)
	want := wantScan(data)
	var got string
	if err != nil {
		var inv *InvalidError
		if !errors.As(err, &inv) {
			t.Fatalf("scanObject(%q) error %v is not an *InvalidError", data, err)
		}
		got = inv.Reason
	}
	if got != want {
		t.Errorf("scanObject(%q) = %q, want %q", data, got, want)
	}
}

func TestScanObject(t *testing.T) {
	deep := func(n int) []byte {
		return []byte(`{"a":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + "}")
	}
	tests := []string{
		``, ` `, `{}`, ` {} `, `{"a":1}`, `{"a":1,}`, `{,"a":1}`, `{"a" 1}`, `{"a":}`, `{"a":1 "b":2}`,
		`{"a":1}}`, `{"a":1}{`, `{"a":1} x`, `{"a":1}]`, `{a:1}`, `{'a':1}`, `{"a":[1,2,]}`, `{"a":[,]}`,
		`{"a":[1 2]}`, `{"a":{"b":}}`, `{"a":{"b"}}`, `{"a":[}`, `{"a":{]}`,
		`{"a":-}`, `{"a":-0}`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":1.5e}`, `{"a":1.5e+}`, `{"a":1E-7}`, `{"a":-12.50e+03}`,
		`{"a":tru}`, `{"a":true}`, `{"a":falsey}`, `{"a":null}`, `{"a":nul}`, `{"a":NaN}`, `{"a":Infinity}`,
		`{"a":"\u00e9\ud83d\ude00"}`, `{"a":"\u00g9"}`, `{"a":"\x"}`, `{"a":"\/\b\f\n\r\t\"\\"}`, "{\"a\":\"\t\"}",
		"{\"a\":\"\xff\xfe\"}", "{\"\xff\":1}", `{"a":"unterminated}`, `{"a\"":1}`, `{"a\\":1}`, `{"a\\\"":1}`,
		"\ufeff{}", `[]`, `[{}]`, `"x"`, `1`, `null`, `true`, `[1] x`, `"x" "y"`, `{"a":1}` + "\x00",
	}
	for _, tt := range tests {
		checkScan(t, []byte(tt))
	}
	for _, n := range []int{maxDepth - 1, maxDepth, maxDepth + 1} {
		checkScan(t, deep(n))
	}
}

func TestScanObjectRecordsKnownFields(t *testing.T) {
	data := []byte(`{"userId":"u","x":{"userId":"nested"},"action" : [1, {"a":"}"}] ,"siteIds":null,"id":1,"source":"s","occurredAt":"t","Id":2,"u\u0073erId":"last"}`)
	var f rawFields
	if err := scanObject(data, &f); err != nil {
		t.Fatalf("scanObject: %v", err)
	}
	got := map[string]string{
		"userId": string(f.userID), "action": string(f.action), "siteIds": string(f.siteIDs),
		"id": string(f.id), "source": string(f.source), "occurredAt": string(f.occurredAt),
	}
	want := map[string]string{
		"userId": `"last"`, "action": `[1, {"a":"}"}]`, "siteIds": `null`,
		"id": `1`, "source": `"s"`, "occurredAt": `"t"`,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %s, want %s", k, got[k], w)
		}
	}
}

// FuzzScanObject holds the hand-written scanner to encoding/json's verdict.
func FuzzScanObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,{"b":"\u00e9"}],"c":-1.5e3}`, `{"a":1} x`, `[1]`, `{"a":"\x"}`} {
		f.Add([]byte(s))
	}
	f.Add(hrEvent(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkScan(t, data)
	})
}
