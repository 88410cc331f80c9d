package event

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestSetPayload(t *testing.T) {
	tests := []struct {
		name      string
		data      []byte
		wantEvent string // "" means Event must be nil
		wantRaw   []byte
	}{
		{name: "object", data: []byte(`{"userId":"x"}`), wantEvent: `{"userId":"x"}`},
		{name: "object with surrounding space", data: []byte(" \n{\"a\": 1}\r\n"), wantEvent: `{"a": 1}`},
		{name: "array", data: []byte(`[{"a":1}]`), wantRaw: []byte(`[{"a":1}]`)},
		{name: "string", data: []byte(`"{}"`), wantRaw: []byte(`"{}"`)},
		{name: "not json", data: []byte("userId=x"), wantRaw: []byte("userId=x")},
		{name: "object with trailing data", data: []byte(`{} {}`), wantRaw: []byte(`{} {}`)},
		{name: "broken object", data: []byte(`{"a":`), wantRaw: []byte(`{"a":`)},
		{name: "binary", data: []byte{0, 0xff, '{'}, wantRaw: []byte{0, 0xff, '{'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := bytes.Clone(tt.data)
			// Start from the other representation so SetPayload must clear it.
			d := DeadLetter{Event: json.RawMessage(`{"old":1}`), RawPayload: []byte("old")}
			d.SetPayload(data)
			for i := range data {
				data[i] = 'X' // the message buffer is reused
			}
			if tt.wantEvent == "" {
				if d.Event != nil {
					t.Errorf("Event = %s, want nil", d.Event)
				}
			} else if string(d.Event) != tt.wantEvent {
				t.Errorf("Event = %s, want %s", d.Event, tt.wantEvent)
			}
			if !bytes.Equal(d.RawPayload, tt.wantRaw) {
				t.Errorf("RawPayload = %q, want %q", d.RawPayload, tt.wantRaw)
			}
		})
	}
}

func validDeadLetter() DeadLetter {
	return DeadLetter{
		UserID:   testUser,
		Action:   Unfollow,
		SiteID:   testSite1,
		Error:    Failure{Code: "accessDenied", Message: "Access denied", HTTPStatus: 207},
		Attempts: 2,
		DeadAt:   time.Date(2024, 5, 1, 7, 30, 0, 0, time.UTC),
		Origin:   Origin{Stream: "SITEFOLLOW", Sequence: 7, Subject: "sitefollow.requests.hr"},
		Event:    json.RawMessage(`{"userId":"` + testUser + `"}`),
	}
}

func TestEncodeDeadLetterRefuses(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(*DeadLetter)
		wantField string
	}{
		{"no error code", func(d *DeadLetter) { d.Error.Code = "" }, "error.code"},
		{"no origin stream", func(d *DeadLetter) { d.Origin.Stream = "" }, "origin.stream"},
		{"negative attempts", func(d *DeadLetter) { d.Attempts = -1 }, "attempts"},
		{"negative http status", func(d *DeadLetter) { d.Error.HTTPStatus = -1 }, "error.httpStatus"},
		{"event and raw payload", func(d *DeadLetter) { d.RawPayload = []byte("x") }, "event"},
		{"event is an array", func(d *DeadLetter) { d.Event = json.RawMessage(`[1]`) }, "event"},
		{"event is null", func(d *DeadLetter) { d.Event = json.RawMessage(`null`) }, "event"},
		{"event is broken", func(d *DeadLetter) { d.Event = json.RawMessage(`{"a":`) }, "event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := validDeadLetter()
			tt.edit(&d)
			data, err := EncodeDeadLetter(d)
			if data != nil {
				t.Errorf("data = %s, want nil", data)
			}
			assertInvalid(t, err, tt.wantField, "")
			if !strings.HasPrefix(err.Error(), "encode dead letter: ") {
				t.Errorf("error %q does not name the operation", err)
			}
		})
	}
}

func TestDecodeDeadLetterRefuses(t *testing.T) {
	valid, err := EncodeDeadLetter(validDeadLetter())
	if err != nil {
		t.Fatalf("EncodeDeadLetter: %v", err)
	}
	// edit changes the generic form of the valid dead letter.
	tests := []struct {
		name      string
		edit      func(map[string]any)
		raw       string // used instead of edit when set
		wantField string
	}{
		{name: "not json", raw: "dead", wantField: ""},
		{name: "array", raw: "[]", wantField: ""},
		{name: "missing userId", edit: func(m map[string]any) { delete(m, "userId") }, wantField: "userId"},
		{name: "missing error", edit: func(m map[string]any) { delete(m, "error") }, wantField: "error"},
		{name: "missing error code", edit: func(m map[string]any) { delete(sub(m, "error"), "code") }, wantField: "error.code"},
		{name: "missing error message", edit: func(m map[string]any) { delete(sub(m, "error"), "message") }, wantField: "error.message"},
		{name: "missing http status", edit: func(m map[string]any) { delete(sub(m, "error"), "httpStatus") }, wantField: "error.httpStatus"},
		{name: "missing attempts", edit: func(m map[string]any) { delete(m, "attempts") }, wantField: "attempts"},
		{name: "missing deadAt", edit: func(m map[string]any) { delete(m, "deadAt") }, wantField: "deadAt"},
		{name: "bad deadAt", edit: func(m map[string]any) { m["deadAt"] = "yesterday" }, wantField: "deadAt"},
		{name: "missing origin", edit: func(m map[string]any) { delete(m, "origin") }, wantField: "origin"},
		{name: "missing origin stream", edit: func(m map[string]any) { delete(sub(m, "origin"), "stream") }, wantField: "origin.stream"},
		{name: "missing origin sequence", edit: func(m map[string]any) { delete(sub(m, "origin"), "sequence") }, wantField: "origin.sequence"},
		{name: "missing origin subject", edit: func(m map[string]any) { delete(sub(m, "origin"), "subject") }, wantField: "origin.subject"},
		{name: "attempts string", edit: func(m map[string]any) { m["attempts"] = "2" }, wantField: "attempts"},
		{name: "negative sequence", edit: func(m map[string]any) { sub(m, "origin")["sequence"] = -1 }, wantField: "origin.sequence"},
		{name: "event and raw payload", edit: func(m map[string]any) { m["rawPayload"] = "eA==" }, wantField: "event"},
		{name: "event string", edit: func(m map[string]any) { m["event"] = "{}" }, wantField: "event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(tt.raw)
			if tt.edit != nil {
				var m map[string]any
				if err := json.Unmarshal(valid, &m); err != nil {
					t.Fatal(err)
				}
				tt.edit(m)
				if data, err = json.Marshal(m); err != nil {
					t.Fatal(err)
				}
			}
			_, err := DecodeDeadLetter(data)
			assertInvalid(t, err, tt.wantField, "")
			if !strings.HasPrefix(err.Error(), "decode dead letter: ") {
				t.Errorf("error %q does not name the operation", err)
			}
		})
	}
}

func sub(m map[string]any, key string) map[string]any { return m[key].(map[string]any) }
