package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The published contract lives beside the code it describes; these tests
// keep the two from drifting apart.
const (
	schemaDir        = "../../schemas"
	requestSchema    = "follow-request.v1.schema.json"
	deadLetterSchema = "dead-letter.v1.schema.json"
)

// compileSchema compiles one schema of schemaDir with format assertions on,
// so that "date-time" is checked rather than merely annotated.
func compileSchema(tb testing.TB, name string) *jsonschema.Schema {
	tb.Helper()
	path, err := filepath.Abs(filepath.Join(schemaDir, name))
	if err != nil {
		tb.Fatalf("locate schema %s: %v", name, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	sch, err := c.Compile(path)
	if err != nil {
		tb.Fatalf("compile schema %s: %v", name, err)
	}
	return sch
}

// exampleFiles returns every file under dir, failing if there are none so a
// moved directory cannot pass silently.
func exampleFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read examples: %v", err)
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		files = append(files, filepath.Join(dir, e.Name()))
	}
	if len(files) == 0 {
		t.Fatalf("no examples in %s", dir)
	}
	return files
}

// checkExamples runs every file of examples/<kind>/{valid,invalid} through
// the schema and through decode, and wants both to agree with the directory.
func checkExamples(t *testing.T, kind, schemaName string, decode func([]byte) error) {
	t.Helper()
	sch := compileSchema(t, schemaName)
	for _, verdict := range []string{"valid", "invalid"} {
		wantValid := verdict == "valid"
		for _, file := range exampleFiles(t, filepath.Join(schemaDir, "examples", kind, verdict)) {
			t.Run(filepath.Join(kind, verdict, filepath.Base(file)), func(t *testing.T) {
				data, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				_, schemaErr := validateSchema(sch, data)
				decodeErr := decode(data)
				if got := schemaErr == nil; got != wantValid {
					t.Errorf("schema says valid = %t, want %t: %v", got, wantValid, schemaErr)
				}
				if got := decodeErr == nil; got != wantValid {
					t.Errorf("Go decoder says valid = %t, want %t: %v", got, wantValid, decodeErr)
				}
				if decodeErr != nil && !errors.Is(decodeErr, ErrInvalid) {
					t.Errorf("decode error %v does not match ErrInvalid", decodeErr)
				}
			})
		}
	}
}

func TestRequestExamples(t *testing.T) {
	checkExamples(t, "", requestSchema, func(data []byte) error {
		_, err := Decoder{}.Decode(data)
		return err
	})
}

func TestDeadLetterExamples(t *testing.T) {
	checkExamples(t, "dead-letter", deadLetterSchema, func(data []byte) error {
		_, err := DecodeDeadLetter(data)
		return err
	})
}

// TestDeadLetterRoundTrip re-encodes every valid dead-letter example and
// wants the schema to accept the result and decoding to give it back.
func TestDeadLetterRoundTrip(t *testing.T) {
	sch := compileSchema(t, deadLetterSchema)
	for _, file := range exampleFiles(t, filepath.Join(schemaDir, "examples", "dead-letter", "valid")) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			d, err := DecodeDeadLetter(data)
			if err != nil {
				t.Fatalf("DecodeDeadLetter: %v", err)
			}
			encoded, err := EncodeDeadLetter(d)
			if err != nil {
				t.Fatalf("EncodeDeadLetter: %v", err)
			}
			if _, err := validateSchema(sch, encoded); err != nil {
				t.Errorf("schema refuses %s: %v", encoded, err)
			}
			again, err := DecodeDeadLetter(encoded)
			if err != nil {
				t.Fatalf("DecodeDeadLetter(encoded): %v", err)
			}
			assertDeadLetterEqual(t, again, d)
		})
	}
}

// TestEncodeDeadLetterMatchesSchema builds dead letters the way the consumer
// does and wants the schema to accept every encoding.
func TestEncodeDeadLetterMatchesSchema(t *testing.T) {
	sch := compileSchema(t, deadLetterSchema)
	base := func() DeadLetter {
		return DeadLetter{
			UserID: testUser, Action: Follow, SiteID: testSite1,
			Error:    Failure{Code: "itemNotFound", Message: "Item not found", HTTPStatus: 207, RequestID: "r-1", ClientRequestID: "c-1"},
			Attempts: 1,
			DeadAt:   time.Date(2024, 5, 1, 7, 30, 0, 123, time.FixedZone("", 2*3600)),
			Origin:   Origin{Stream: "SITEFOLLOW", Sequence: 42, Subject: "sitefollow.requests.app"},
		}
	}
	tests := []struct {
		name    string
		payload []byte // nil: no SetPayload call
		edit    func(*DeadLetter)
	}{
		{name: "graph failure with event", payload: hrEvent(t)},
		{name: "no payload", edit: func(d *DeadLetter) { d.Error.RequestID, d.Error.ClientRequestID = "", "" }},
		{name: "invalid event with raw payload", payload: []byte("\x00\xffnot json"), edit: func(d *DeadLetter) {
			d.UserID, d.Action, d.SiteID = "", "", ""
			d.Error = Failure{Code: CodeInvalidEvent, Message: "invalid event: payload is not JSON"}
		}},
		{name: "invalid event with array payload", payload: []byte(`[1,2]`), edit: func(d *DeadLetter) {
			d.Error = Failure{Code: CodeInvalidEvent, Message: "invalid event: payload is not a JSON object, got array"}
		}},
		{name: "retries exhausted", payload: payload(t, nil), edit: func(d *DeadLetter) {
			d.Error = Failure{Code: CodeRetriesExhausted, Message: "503", HTTPStatus: 503}
			d.Attempts = 10
		}},
		{name: "zero time and sequence", edit: func(d *DeadLetter) { d.DeadAt, d.Origin.Sequence = time.Time{}, 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := base()
			if tt.payload != nil {
				d.SetPayload(tt.payload)
			}
			if tt.edit != nil {
				tt.edit(&d)
			}
			data, err := EncodeDeadLetter(d)
			if err != nil {
				t.Fatalf("EncodeDeadLetter: %v", err)
			}
			if _, err := validateSchema(sch, data); err != nil {
				t.Errorf("schema refuses %s: %v", data, err)
			}
			got, err := DecodeDeadLetter(data)
			if err != nil {
				t.Fatalf("DecodeDeadLetter: %v", err)
			}
			assertDeadLetterEqual(t, got, d)
		})
	}
}

func assertDeadLetterEqual(t *testing.T, got, want DeadLetter) {
	t.Helper()
	if !got.DeadAt.Equal(want.DeadAt) {
		t.Errorf("DeadAt = %v, want %v", got.DeadAt, want.DeadAt)
	}
	if !bytes.Equal(got.Event, want.Event) && !jsonEqual(t, got.Event, want.Event) {
		t.Errorf("Event = %s, want %s", got.Event, want.Event)
	}
	if !bytes.Equal(got.RawPayload, want.RawPayload) {
		t.Errorf("RawPayload = %q, want %q", got.RawPayload, want.RawPayload)
	}
	got.DeadAt, want.DeadAt = time.Time{}, time.Time{}
	got.Event, want.Event = nil, nil
	got.RawPayload, want.RawPayload = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("dead letter\n got %+v\nwant %+v", got, want)
	}
}

// jsonEqual reports whether a and b are the same JSON text but for
// insignificant whitespace.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var ca, cb bytes.Buffer
	if err := json.Compact(&ca, a); err != nil {
		return false
	}
	if err := json.Compact(&cb, b); err != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// TestFieldRulesMatchSchema compares Decode with the schema on many
// generated near-miss values of the fields whose rules are hand-written
// (userId, siteIds, siteUrls, occurredAt), where drift would hide best. The generator
// is seeded, so a failure reproduces.
func TestFieldRulesMatchSchema(t *testing.T) {
	sch := compileSchema(t, requestSchema)
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(tokens []string, n int) string {
		var b strings.Builder
		for range n {
			b.WriteString(tokens[rng.IntN(len(tokens))])
		}
		return b.String()
	}
	mutate := func(s string, alphabet string) string {
		b := []byte(s)
		for range 1 + rng.IntN(2) {
			b[rng.IntN(len(b))] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	guid := "da60e844-ba1d-49bc-b4d4-d5e36bae9019"
	userTokens := []string{"a", "Z", "0", ".", "-", "_", "'", "!", "^", "~", "+", "/", "?", "#", "%", `\`, " ", "\t",
		"@", "@", "contoso", ".com", "é", "{", "..", guid, strings.ToUpper(guid), "-x", "x-", strings.Repeat("b", 63), strings.Repeat("c", 64)}
	localTokens := []string{"a", "Z0", ".", "-", "_", "'", "!", "^", "~", "..", "+", "$"}
	domainTokens := []string{"contoso", ".", ".com", "-", "x-", "-y", "0", "_", strings.Repeat("d", 62), strings.Repeat("e", 63)}
	hostTokens := []string{"contoso", ".", "sharepoint", ".com", "-", "x-", "-y", "_", "0", strings.Repeat("d", 63), strings.Repeat("e", 64), "é", "/"}
	schemeTokens := []string{"https://", "https://", "http://", "HTTPS://", "https:/", ""}
	pathTokens := []string{"/", "/", "sites", "Finance", ".", "..", "/.", "/..", "%2e", "%2E", "%2F", "%20", "%zz", "%", "%4",
		" ", "?", "#", "\\", "é", "\u00a0", ":443", "@", "\x7f", "\t", "A-b_c~", "//", "'", "+", "\u2028"}
	tests := []struct {
		field    string
		generate func() any
	}{
		{"userId", func() any { return pick(userTokens, 1+rng.IntN(6)) }},
		{"userId", func() any { return pick(localTokens, 1+rng.IntN(4)) + "@" + pick(domainTokens, 1+rng.IntN(5)) }},
		{"userId", func() any { return strings.Repeat("a", 230+rng.IntN(20)) + "@contoso.com" }},
		{"userId", func() any { return mutate("adele.vance@contoso.com", "aZ0.-_'!^~+/?#%\\ @{") }},
		{"userId", func() any { return mutate(guid, "aAfFgG0-.{ ") }},
		{"siteIds", func() any {
			return []string{pick(hostTokens, 1+rng.IntN(5)) + "," + guid + "," + strings.ToUpper(guid)}
		}},
		{"siteIds", func() any { return []string{mutate(testSite1, "aAgG0-,. _")} }},
		{"siteUrls", func() any {
			return []string{pick(schemeTokens, 1) + pick(hostTokens, 1+rng.IntN(4)) + pick(pathTokens, rng.IntN(7))}
		}},
		{"siteUrls", func() any {
			return []string{mutate("https://contoso.sharepoint.com/sites/Fin%C3%A4nce/", "aZ0-./%:@?#\\ \t2eEé")}
		}},
		{"siteUrls", func() any {
			return []string{"https://contoso.sharepoint.com/sites/" + strings.Repeat("é", 980+rng.IntN(20))}
		}},
		{"occurredAt", func() any { return mutate("2024-02-29T23:59:59.5+05:30", "0123456789TtZz:+-. ") }},
		{"occurredAt", func() any { return mutate("2023-12-31T23:59:59Z", "01234569TZ:+-") }},
	}
	const perGenerator = 3000
	for i, tt := range tests {
		var valid int
		for range perGenerator {
			value := tt.generate()
			data := payload(t, map[string]any{tt.field: value})
			_, err := Decoder{}.Decode(data)
			_, schemaErr := validateSchema(sch, data)
			if (err == nil) != (schemaErr == nil) {
				t.Errorf("%s %q: Decode error %v, schema error %v", tt.field, value, err, schemaErr)
			}
			if err == nil {
				valid++
			}
		}
		// A generator that yields only one verdict compares nothing.
		if valid == 0 || valid == perGenerator {
			t.Errorf("generator %d (%s) made %d valid values of %d, want some of each", i, tt.field, valid, perGenerator)
		}
		t.Logf("generator %d (%s): %d valid of %d", i, tt.field, valid, perGenerator)
	}
}
