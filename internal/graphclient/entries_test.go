package graphclient

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const siteJSON = `{"id":"contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-bfa80bee8740","webUrl":"https://contoso.sharepoint.com/sites/Site-712a596e","name":"Site-712a596e","sharepointIds":{"siteId":"da60e844-ba1d-49bc-b4d4-d5e36bae9019","webId":"712a596e-90a1-49e3-9b48-bfa80bee8740","siteUrl":"https://contoso.sharepoint.com/sites/Site-712a596e"},"siteCollection":{"hostname":"contoso.sharepoint.com"}}`

// scanEntriesCases are answers scanEntries must decode itself (ok) or leave
// to encoding/json; FuzzScanEntries starts from them too.
var scanEntriesCases = []struct {
	name string
	body string
	ok   bool
}{
	{name: "sites", body: `{"value":[` + siteJSON + `,` + siteJSON + `]}`, ok: true},
	{name: "empty value", body: `{"value":[]}`, ok: true},
	{name: "no value", body: `{"@odata.context":"x"}`, ok: true},
	{name: "empty object", body: " {} ", ok: true},
	{name: "nested error", body: `{"value":[{"id":"a","error":{"code":"generalException","message":"m","innerError":{"code":"x","request-id":"r","client-request-id":"c","innerError":{"code":"throttledRequest"}}}}]}`, ok: true},
	{name: "skipped kinds", body: `{"a":[1,-2.5e+3,0,true,false,null,"s\"\\\/\b\f\n\r\t\u00e9",{}],"value":[{"x":{"y":[[]]},"id":"a","n":-0.0E-1}],"z":"` + "\xff caf\u00e9" + `"}`, ok: true},
	{name: "escape in id", body: `{"value":[{"id":"a\u0062"}]}`},
	{name: "non-ASCII in code", body: "{\"value\":[{\"id\":\"a\",\"error\":{\"code\":\"caf\u00e9\"}}]}"},
	{name: "invalid UTF-8 in id", body: "{\"value\":[{\"id\":\"\xff\"}]}"},
	{name: "key cased", body: `{"value":[{"ID":"a"}]}`},
	{name: "value cased", body: `{"Value":[{"id":"a"}]}`},
	{name: "key escaped", body: `{"value":[{"\u0069d":"a"}]}`},
	{name: "inner key underscore", body: `{"value":[{"id":"a","error":{"innerError":{"request_id":"x"}}}]}`},
	{name: "repeated id", body: `{"value":[{"id":"a","id":"b"}]}`},
	{name: "repeated value", body: `{"value":[],"value":[{"id":"b"}]}`},
	{name: "repeated error", body: `{"value":[{"id":"a","error":{"code":"x"},"error":{"message":"y"}}]}`},
	{name: "null error", body: `{"value":[{"id":"a","error":null}]}`},
	{name: "null entry", body: `{"value":[null]}`},
	{name: "null value", body: `{"value":null}`},
	{name: "null body", body: `null`},
	{name: "id not string", body: `{"value":[{"id":5}]}`},
	{name: "request-id not string", body: `{"value":[{"id":"a","error":{"innerError":{"request-id":1}}}]}`},
	{name: "value not array", body: `{"value":{}}`},
	{name: "array body", body: `[{"id":"a"}]`},
	{name: "trailing data", body: `{"value":[]} {}`},
	{name: "truncated", body: `{"value":[{"id":"a"}`},
	{name: "trailing comma", body: `{"value":[{"id":"a"},]}`},
	{name: "bad number", body: `{"value":[],"n":01}`},
	{name: "bad literal", body: `{"value":[],"n":tru}`},
	{name: "bad escape", body: `{"value":[],"s":"\x"}`},
	{name: "control character", body: "{\"value\":[],\"s\":\"a\tb\"}"},
	{name: "deep", body: `{"value":[],"d":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`},
}

func TestScanEntries(t *testing.T) {
	for _, tc := range scanEntriesCases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := scanEntries(tc.body)
			if ok != tc.ok {
				t.Errorf("ok = %v, want %v", ok, tc.ok)
			}
			checkScanEntries(t, tc.body, got, ok)
		})
	}
}

func TestScanEntriesDocsExamples(t *testing.T) {
	tests := []struct {
		file  string
		ids   []string
		codes []string // error code per entry, "" for a site
	}{
		{file: "docs-add-200.json", ids: []string{"contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-bfa80bee8740", "contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,0271110f-634f-4300-a841-3a8a2e851851"}, codes: []string{"", ""}},
		{file: "docs-add-207.json", ids: []string{"contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,512a596e-90a1-49e3-9b48-bfa80bee8740", "contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,0271110f-634f-4300-a841-3a8a2e851851"}, codes: []string{"invalidRequest", ""}},
		{file: "docs-remove-207.json", ids: []string{"contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,512a596e-90a1-49e3-9b48-bfa80bee8740"}, codes: []string{"invalidRequest"}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			body := readTestdata(t, tc.file)
			got, ok := scanEntries(body)
			if !ok {
				t.Fatalf("scanEntries declined the documentation's example")
			}
			checkScanEntries(t, body, got, ok)
			var ids, codes []string
			for _, en := range got {
				ids = append(ids, en.ID)
				code := ""
				if en.Error != nil {
					code = en.Error.Code
				}
				codes = append(codes, code)
			}
			if !reflect.DeepEqual(ids, tc.ids) || !reflect.DeepEqual(codes, tc.codes) {
				t.Errorf("got ids %q codes %q, want ids %q codes %q", ids, codes, tc.ids, tc.codes)
			}
		})
	}
}

func FuzzScanEntries(f *testing.F) {
	for _, tc := range scanEntriesCases {
		f.Add(tc.body)
	}
	for _, name := range []string{"docs-add-200.json", "docs-add-207.json", "docs-remove-207.json"} {
		f.Add(readTestdata(f, name))
	}
	f.Fuzz(func(t *testing.T, body string) {
		got, ok := scanEntries(body)
		checkScanEntries(t, body, got, ok)
	})
}

// checkScanEntries holds scanEntries to encoding/json: what it accepts,
// json.Unmarshal decodes without error into the same entries.
func checkScanEntries(t *testing.T, body string, got []entry, ok bool) {
	t.Helper()
	if !ok {
		return
	}
	var want struct {
		Value []entry `json:"value"`
	}
	if err := json.Unmarshal([]byte(body), &want); err != nil {
		t.Fatalf("scanEntries accepted %q, which encoding/json refuses: %v", body, err)
	}
	if !reflect.DeepEqual(got, want.Value) {
		t.Fatalf("scanEntries(%q):\ngot  %s\nwant %s", body, dumpEntries(got), dumpEntries(want.Value))
	}
}

func dumpEntries(es []entry) string {
	if es == nil {
		return "nil"
	}
	b, err := json.Marshal(es)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func TestEntriesFallsBackToEncodingJSON(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantIDs []string
		wantErr bool
	}{
		{name: "escaped id", body: `{"value":[{"id":"a\u0062"}]}`, wantIDs: []string{"ab"}},
		{name: "cased keys", body: `{"VALUE":[{"Id":"a"}]}`, wantIDs: []string{"a"}},
		{name: "blank", body: " \n"},
		{name: "invalid", body: `{"value":[`, wantErr: true},
		{name: "wrong type", body: `{"value":[{"id":1}]}`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := (&response{status: 200, body: tc.body, raw: []byte(tc.body)}).entries()
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			var ids []string
			for _, en := range got {
				ids = append(ids, en.ID)
			}
			if !reflect.DeepEqual(ids, tc.wantIDs) {
				t.Errorf("ids = %q, want %q", ids, tc.wantIDs)
			}
		})
	}
}

func readTestdata(tb testing.TB, name string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatalf("read testdata: %v", err)
	}
	return string(b)
}

// requestBodyCases are id lists whose request body must be what
// json.Marshal writes.
var requestBodyCases = [][]string{
	{siteID(1)},
	{siteID(1), strings.ToUpper(siteID(2)), siteID(3)},
	{`quote"back\slash`, "<html>&", "tab\tnew\nline", "caf\u00e9", "\xff", "\u2028", "del\x7f", ""},
}

func TestRequestBodyMatchesMarshal(t *testing.T) {
	for _, ids := range requestBodyCases {
		checkRequestBody(t, ids)
	}
}

func FuzzRequestBody(f *testing.F) {
	f.Add(siteID(1), "x")
	f.Add("<&>", "\xff\"")
	f.Fuzz(func(t *testing.T, a, b string) {
		checkRequestBody(t, []string{a, b})
	})
}

func checkRequestBody(t *testing.T, ids []string) {
	t.Helper()
	type entry struct {
		ID string `json:"id"`
	}
	v := struct {
		Value []entry `json:"value"`
	}{}
	for _, id := range ids {
		v.Value = append(v.Value, entry{ID: id})
	}
	want, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	got, err := requestBody(ids)
	if err != nil {
		t.Fatalf("requestBody: %v", err)
	}
	if string(got) != string(want) {
		t.Errorf("requestBody(%q):\ngot  %s\nwant %s", ids, got, want)
	}
}
