package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

const (
	testUser  = "2f1c9a4e-8d3b-4c7a-9e21-5b6d7f8a9c0d"
	testSite1 = "contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-bfa80bee8740"
	testSite2 = "contoso.sharepoint.com,bdd640fb-0667-4ad1-9c80-317fa3b1799d,23b8c1e9-3924-46de-beb1-3b9046685257"
)

// absent marks a field that payload leaves out.
type absentField struct{}

var absent absentField

// payload returns a valid event with the given fields replaced, or removed
// when their value is absent.
func payload(t testing.TB, fields map[string]any) []byte {
	t.Helper()
	m := map[string]any{
		"userId":  testUser,
		"action":  "follow",
		"siteIds": []string{testSite1},
	}
	for k, v := range fields {
		if v == absent {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("marshal payload: %v", err)
	}
	return data
}

func sites(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("contoso.sharepoint.com,%08x-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-%012x", i*7919, i*104729)
	}
	return ids
}

func TestDecodeValid(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want Request
	}{
		{
			name: "minimal",
			data: payload(t, nil),
			want: Request{UserID: testUser, Action: Follow, SiteIDs: []string{testSite1}},
		},
		{
			name: "unfollow with optional fields",
			data: payload(t, map[string]any{
				"action": "unfollow", "id": "req-1", "source": "hr", "occurredAt": "2024-05-01T14:00:00.5+02:00",
			}),
			want: Request{UserID: testUser, Action: Unfollow, SiteIDs: []string{testSite1}, ID: "req-1", Source: "hr", OccurredAt: "2024-05-01T14:00:00.5+02:00"},
		},
		{
			name: "upn user",
			data: payload(t, map[string]any{"userId": "Adele.Vance@Contoso.com"}),
			want: Request{UserID: "Adele.Vance@Contoso.com", Action: Follow, SiteIDs: []string{testSite1}},
		},
		{
			name: "upper-case guids kept as given",
			data: payload(t, map[string]any{"userId": strings.ToUpper(testUser), "siteIds": []string{strings.ToUpper(testSite1)}}),
			want: Request{UserID: strings.ToUpper(testUser), Action: Follow, SiteIDs: []string{strings.ToUpper(testSite1)}},
		},
		{
			name: "unknown fields ignored",
			data: payload(t, map[string]any{"extra": map[string]any{"a": []any{1, "}", nil}}, "UserId": "x/y", "USERID": 5}),
			want: Request{UserID: testUser, Action: Follow, SiteIDs: []string{testSite1}},
		},
		{
			name: "null optional fields count as absent",
			data: payload(t, map[string]any{"id": nil, "source": nil, "occurredAt": nil}),
			want: Request{UserID: testUser, Action: Follow, SiteIDs: []string{testSite1}},
		},
		{
			name: "duplicate sites kept once at first position",
			data: payload(t, map[string]any{"siteIds": []string{testSite2, testSite1, strings.ToUpper(testSite2), testSite1}}),
			want: Request{UserID: testUser, Action: Follow, SiteIDs: []string{testSite2, testSite1}},
		},
		{
			name: "repeated key last wins",
			data: []byte(`{"userId": 5, "action": "follow", "siteIds": ["` + testSite1 + `"], "userId": "` + testUser + `"}`),
			want: Request{UserID: testUser, Action: Follow, SiteIDs: []string{testSite1}},
		},
		{
			name: "escapes in keys and values",
			data: []byte(`{"user\u0049d": "a\u0040contoso.com", "action": "unfollow", "siteIds": ["` + strings.ReplaceAll(testSite1, ",", `\u002c`) + `"], "x": "\"}"}`),
			want: Request{UserID: "a@contoso.com", Action: Unfollow, SiteIDs: []string{testSite1}},
		},
		{
			name: "whitespace everywhere",
			data: []byte(" \n{ \"userId\" :\t\"" + testUser + "\" , \"action\" : \"follow\" ,\r\n \"siteIds\" : [ \"" + testSite1 + "\" , \"" + testSite2 + "\" ] } \n"),
			want: Request{UserID: testUser, Action: Follow, SiteIDs: []string{testSite1, testSite2}},
		},
		{
			name: "exactly the default cap",
			data: payload(t, map[string]any{"siteIds": sites(DefaultMaxSites)}),
			want: Request{UserID: testUser, Action: Follow, SiteIDs: sites(DefaultMaxSites)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decoder{}.Decode(tt.data)
			if err != nil {
				t.Fatalf("Decode(%s) error = %v, want nil", tt.data, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decode(%s)\n got %+v\nwant %+v", tt.data, got, tt.want)
			}
		})
	}
}

func TestDecodeInvalid(t *testing.T) {
	tests := []struct {
		name       string
		data       []byte
		wantField  string
		wantReason string // a substring of the reason
	}{
		{"empty payload", nil, "", "payload is empty"},
		{"not json", []byte("userId=x&action=follow"), "", "payload is not JSON"},
		{"only whitespace", []byte(" \n"), "", "payload is not JSON"},
		{"truncated object", []byte(`{"userId": "a@b.com"`), "", "payload is not JSON"},
		{"array", []byte(`[{"userId": "a@b.com"}]`), "", "payload is not a JSON object, got array"},
		{"string", []byte(`"{}"`), "", "payload is not a JSON object, got string"},
		{"null", []byte(`null`), "", "payload is not a JSON object, got null"},
		{"trailing object", append(payload(t, nil), "{}"...), "", "trailing data"},
		{"trailing garbage", append(payload(t, nil), " x"...), "", "trailing data"},

		{"missing userId", payload(t, map[string]any{"userId": absent}), "userId", "is required"},
		{"null userId", payload(t, map[string]any{"userId": nil}), "userId", "must be a string, got null"},
		{"number userId", payload(t, map[string]any{"userId": 42}), "userId", "must be a string, got number"},
		{"empty userId", payload(t, map[string]any{"userId": ""}), "userId", "must not be empty"},
		{"wrong-case key only", []byte(`{"UserId": "` + testUser + `", "action": "follow", "siteIds": ["` + testSite1 + `"]}`), "userId", "is required"},
		{"userId slash", payload(t, map[string]any{"userId": "a@contoso.com/../me"}), "userId", `must not contain "/"`},
		{"userId question mark", payload(t, map[string]any{"userId": "a@contoso.com?x=1"}), "userId", `must not contain "?"`},
		{"userId hash", payload(t, map[string]any{"userId": "a_b.com#EXT#@contoso.com"}), "userId", `must not contain "#"`},
		{"userId percent", payload(t, map[string]any{"userId": "a%2F@contoso.com"}), "userId", `must not contain "%"`},
		{"userId backslash", payload(t, map[string]any{"userId": `contoso\a`}), "userId", `must not contain "\\"`},
		{"userId dot dot", payload(t, map[string]any{"userId": "a..b@contoso.com"}), "userId", `must not contain ".."`},
		{"userId space", payload(t, map[string]any{"userId": "a b@contoso.com"}), "userId", "whitespace"},
		{"userId tab", payload(t, map[string]any{"userId": "a\tb@contoso.com"}), "userId", "whitespace"},
		{"userId no-break space", payload(t, map[string]any{"userId": "a\u00a0b@contoso.com"}), "userId", "whitespace"},
		{"userId control", payload(t, map[string]any{"userId": "a\x00b@contoso.com"}), "userId", "control"},
		{"userId delete", payload(t, map[string]any{"userId": "a\x7fb@contoso.com"}), "userId", "control"},
		{"userId non-ascii", payload(t, map[string]any{"userId": "adèle@contoso.com"}), "userId", "ASCII"},
		{"userId too long", payload(t, map[string]any{"userId": strings.Repeat("a", 250) + "@contoso.com"}), "userId", "longer than 256"},
		{"userId neither guid nor upn", payload(t, map[string]any{"userId": "adele"}), "userId", "GUID or a user principal name"},
		{"userId two at signs", payload(t, map[string]any{"userId": "a@b@contoso.com"}), "userId", `exactly one "@"`},
		{"userId empty local", payload(t, map[string]any{"userId": "@contoso.com"}), "userId", `before "@"`},
		{"userId bad local char", payload(t, map[string]any{"userId": "a+b@contoso.com"}), "userId", "only letters"},
		{"userId leading dot", payload(t, map[string]any{"userId": ".a@contoso.com"}), "userId", `start or end`},
		{"userId trailing dot", payload(t, map[string]any{"userId": "a.@contoso.com"}), "userId", `start or end`},
		{"userId domain without dot", payload(t, map[string]any{"userId": "a@contoso"}), "userId", `with a "."`},
		{"userId bad domain", payload(t, map[string]any{"userId": "a@-contoso.com"}), "userId", "DNS domain"},
		{"userId guid in braces", payload(t, map[string]any{"userId": "{" + testUser + "}"}), "userId", "GUID or a user principal name"},

		{"missing action", payload(t, map[string]any{"action": absent}), "action", "is required"},
		{"bad action", payload(t, map[string]any{"action": "subscribe"}), "action", `must be "follow" or "unfollow", got "subscribe"`},
		{"action wrong case", payload(t, map[string]any{"action": "Follow"}), "action", `got "Follow"`},
		{"action boolean", payload(t, map[string]any{"action": true}), "action", "must be a string, got boolean"},

		{"missing siteIds", payload(t, map[string]any{"siteIds": absent}), "siteIds", "is required"},
		{"null siteIds", payload(t, map[string]any{"siteIds": nil}), "siteIds", "got null"},
		{"siteIds string", payload(t, map[string]any{"siteIds": testSite1}), "siteIds", "must be an array of site ids, got string"},
		{"siteIds object", payload(t, map[string]any{"siteIds": map[string]any{}}), "siteIds", "got object"},
		{"empty siteIds", payload(t, map[string]any{"siteIds": []string{}}), "siteIds", "must not be empty"},
		{"too many siteIds", payload(t, map[string]any{"siteIds": sites(DefaultMaxSites + 1)}), "siteIds", "more than 100"},
		{"site number", payload(t, map[string]any{"siteIds": []any{testSite1, 7}}), "siteIds[1]", "must be a string, got number"},
		{"site null", payload(t, map[string]any{"siteIds": []any{nil}}), "siteIds[0]", "got null"},
		{"site without commas", payload(t, map[string]any{"siteIds": []string{"contoso.sharepoint.com"}}), "siteIds[0]", "hostname,siteGuid,webGuid"},
		{"site one comma", payload(t, map[string]any{"siteIds": []string{"contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019"}}), "siteIds[0]", "hostname,siteGuid,webGuid"},
		{"site four parts", payload(t, map[string]any{"siteIds": []string{testSite1 + ",x"}}), "siteIds[0]", "hostname,siteGuid,webGuid"},
		{"site bad site guid", payload(t, map[string]any{"siteIds": []string{testSite2, "contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae901x,712a596e-90a1-49e3-9b48-bfa80bee8740"}}), "siteIds[1]", "site id (second part)"},
		{"site bad web guid", payload(t, map[string]any{"siteIds": []string{"contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e90a149e39b48bfa80bee8740"}}), "siteIds[0]", "web id (third part)"},
		{"site bad hostname", payload(t, map[string]any{"siteIds": []string{"contoso_x.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-bfa80bee8740"}}), "siteIds[0]", "DNS hostname"},
		{"site empty hostname", payload(t, map[string]any{"siteIds": []string{",da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-bfa80bee8740"}}), "siteIds[0]", "DNS hostname"},

		{"id number", payload(t, map[string]any{"id": 1}), "id", "must be a string, got number"},
		{"id too long", payload(t, map[string]any{"id": strings.Repeat("x", 257)}), "id", "longer than 256"},
		{"source too long", payload(t, map[string]any{"source": strings.Repeat("é", 65)}), "source", "longer than 64"},
		{"source array", payload(t, map[string]any{"source": []string{"hr"}}), "source", "got array"},
		{"occurredAt words", payload(t, map[string]any{"occurredAt": "yesterday"}), "occurredAt", "RFC 3339"},
		{"occurredAt number", payload(t, map[string]any{"occurredAt": 1714548600}), "occurredAt", "must be a string, got number"},
		{"occurredAt empty", payload(t, map[string]any{"occurredAt": ""}), "occurredAt", "RFC 3339"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decoder{}.Decode(tt.data)
			assertInvalid(t, err, tt.wantField, tt.wantReason)
		})
	}
}

func assertInvalid(t *testing.T, err error, wantField, wantReason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("error = nil, want field %q reason containing %q", wantField, wantReason)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", err)
	}
	var inv *InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("error %v (%T) is not an *InvalidError", err, err)
	}
	if inv.Field != wantField {
		t.Errorf("Field = %q, want %q (error %v)", inv.Field, wantField, err)
	}
	if !strings.Contains(inv.Reason, wantReason) {
		t.Errorf("Reason = %q, want it to contain %q", inv.Reason, wantReason)
	}
}

func TestDecodeOccurredAt(t *testing.T) {
	tests := []struct {
		value string
		valid bool
	}{
		{"", false},
		{"2024-05-01T07:30:00Z", true},
		{"2024-05-01T07:30:00.123456789Z", true},
		{"2024-05-01T07:30:00.1234567891234Z", true},
		{"2024-05-01T07:30:00-05:30", true},
		{"2024-02-29T00:00:00Z", true},
		{"2023-02-29T00:00:00Z", false},
		{"2024-13-01T00:00:00Z", false},
		{"2024-05-01T24:00:00Z", false},
		{"2024-05-01T23:60:00Z", false},
		{"2016-12-31T23:59:60Z", false},
		{"2024-05-01T07:30:00", false},
		{"2024-05-01 07:30:00Z", false},
		{"2024-05-01t07:30:00z", false},
		{"2024-05-01T07:30:00.Z", false},
		{"2024-05-01T07:30:00+0200", false},
		{"2024-05-01T07:30:00+24:00", false},
		{"2024-05-01T07:30:00-23:60", false},
		{"2024-05-01T07:30:00+23:59", true},
		{"2024-05-01T7:30:00Z", false},
		{"+2024-05-01T07:30:00Z", false},
		{"2024-05-01T07:30:00,5Z", false},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got, err := Decoder{}.Decode(payload(t, map[string]any{"occurredAt": tt.value}))
			if tt.valid {
				if err != nil {
					t.Fatalf("error = %v, want nil", err)
				}
				if got.OccurredAt != tt.value {
					t.Errorf("OccurredAt = %q, want %q", got.OccurredAt, tt.value)
				}
				return
			}
			assertInvalid(t, err, "occurredAt", "RFC 3339")
		})
	}
}

func TestDecoderMaxSites(t *testing.T) {
	tests := []struct {
		maxSites, sites int
		valid           bool
	}{
		{maxSites: 2, sites: 2, valid: true},
		{maxSites: 2, sites: 3, valid: false},
		{maxSites: 0, sites: DefaultMaxSites, valid: true},
		{maxSites: 0, sites: DefaultMaxSites + 1, valid: false},
		{maxSites: -1, sites: DefaultMaxSites + 1, valid: false},
		{maxSites: 500, sites: 500, valid: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("max %d sites %d", tt.maxSites, tt.sites), func(t *testing.T) {
			got, err := Decoder{MaxSites: tt.maxSites}.Decode(payload(t, map[string]any{"siteIds": sites(tt.sites)}))
			if !tt.valid {
				assertInvalid(t, err, "siteIds", "must not have more than")
				return
			}
			if err != nil {
				t.Fatalf("error = %v, want nil", err)
			}
			if len(got.SiteIDs) != tt.sites {
				t.Errorf("len(SiteIDs) = %d, want %d", len(got.SiteIDs), tt.sites)
			}
		})
	}
}

func TestDecodeDuplicatesCountTowardsCap(t *testing.T) {
	ids := []string{testSite1, testSite1, testSite1}
	_, err := Decoder{MaxSites: 2}.Decode(payload(t, map[string]any{"siteIds": ids}))
	assertInvalid(t, err, "siteIds", "must not have more than 2")
}

func TestDecodeDedupesLongLists(t *testing.T) {
	// Above the pairwise threshold dedupe switches to a map.
	ids := append(sites(50), sites(50)...)
	for i := range 50 {
		ids[50+i] = strings.ToUpper(ids[50+i])
	}
	got, err := Decoder{}.Decode(payload(t, map[string]any{"siteIds": ids}))
	if err != nil {
		t.Fatalf("error = %v, want nil", err)
	}
	if want := sites(50); !reflect.DeepEqual(got.SiteIDs, want) {
		t.Errorf("SiteIDs = %v, want %v", got.SiteIDs, want)
	}
}

// hrEvent is a typical HR joiner event with 12 sites.
func hrEvent(tb testing.TB) []byte {
	tb.Helper()
	return payload(tb, map[string]any{
		"id": "hr-7f3e2a10-joiner-1001", "source": "hr", "occurredAt": "2024-05-01T07:30:00Z",
		"siteIds": sites(12),
	})
}

func BenchmarkDecode(b *testing.B) {
	data := hrEvent(b)
	var d Decoder
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecode holds Decode to the published schema: both must give the same
// verdict on any input, and a decoded request must carry the values a
// generic JSON parser sees.
func FuzzDecode(f *testing.F) {
	for _, dir := range []string{"valid", "invalid"} {
		files, err := filepath.Glob(filepath.Join(schemaDir, "examples", dir, "*.json"))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Add(hrEvent(f))
	sch := compileSchema(f, requestSchema)
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := Decoder{}.Decode(data)
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("Decode error %v does not match ErrInvalid", err)
		}
		doc, schemaErr := validateSchema(sch, data)
		if (err == nil) != (schemaErr == nil) {
			t.Fatalf("verdicts differ on %q:\nDecode: %v\nschema: %v", data, err, schemaErr)
		}
		if err != nil {
			return
		}
		m := doc.(map[string]any)
		str := func(k string) string {
			s, _ := m[k].(string)
			return s
		}
		strs := func(k string) []string {
			list, _ := m[k].([]any)
			var out []string
			for _, v := range list {
				out = append(out, v.(string))
			}
			return out
		}
		var ids, urls []string
		if list := strs("siteIds"); list != nil {
			ids = dedupe(list)
		}
		if list := strs("siteUrls"); list != nil {
			urls = dedupeURLs(list)
		}
		want := Request{
			UserID: str("userId"), Action: Action(str("action")), SiteIDs: ids, SiteURLs: urls,
			ID: str("id"), Source: str("source"), OccurredAt: str("occurredAt"),
		}
		if !reflect.DeepEqual(req, want) {
			t.Fatalf("Decode(%q)\n got %+v\nwant %+v", data, req, want)
		}
	})
}

// validateSchema parses data as the schema validator does and validates it,
// returning the parsed document.
func validateSchema(sch *jsonschema.Schema, data []byte) (any, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return doc, sch.Validate(doc)
}
