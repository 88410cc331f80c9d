package producer

import (
	"errors"
	"strings"
	"testing"

	"github.com/sitefollow/sitefollow/internal/event"
)

const (
	siteA = "contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-bfa80bee8740"
	siteB = "contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,0271110f-634f-4300-a841-3a8a2e851851"
)

func TestEncode(t *testing.T) {
	t.Parallel()
	enc, err := NewEncoder()
	if err != nil {
		t.Fatalf("NewEncoder: %v", err)
	}
	tests := []struct {
		name      string
		req       event.Request
		want      string // body; "" when invalid
		wantField string // the field an invalid request names
	}{
		{name: "follow", req: event.Request{UserID: "adele@contoso.com", Action: event.Follow, SiteIDs: []string{siteA}, Source: "app"},
			want: `{"userId":"adele@contoso.com","action":"follow","siteIds":["` + siteA + `"],"source":"app"}`},
		{name: "repeats kept once", req: event.Request{UserID: "adele@contoso.com", Action: event.Unfollow, SiteIDs: []string{siteA, strings.ToUpper(siteA), siteB}, ID: "r1"},
			want: `{"userId":"adele@contoso.com","action":"unfollow","siteIds":["` + siteA + `","` + siteB + `"],"id":"r1"}`},
		{name: "occurredAt kept", req: event.Request{UserID: "adele@contoso.com", Action: event.Follow, SiteIDs: []string{siteA}, OccurredAt: "2024-05-01T12:00:00Z"},
			want: `{"userId":"adele@contoso.com","action":"follow","siteIds":["` + siteA + `"],"occurredAt":"2024-05-01T12:00:00Z"}`},
		{name: "no sites", req: event.Request{UserID: "adele@contoso.com", Action: event.Follow}, wantField: "siteIds"},
		{name: "bad action", req: event.Request{UserID: "adele@contoso.com", Action: "like", SiteIDs: []string{siteA}}, wantField: "action"},
		{name: "bad user", req: event.Request{UserID: "a/b@contoso.com", Action: event.Follow, SiteIDs: []string{siteA}}, wantField: "userId"},
		{name: "long source", req: event.Request{UserID: "adele@contoso.com", Action: event.Follow, SiteIDs: []string{siteA}, Source: strings.Repeat("s", 65)}, wantField: "source"},
		{name: "bad time", req: event.Request{UserID: "adele@contoso.com", Action: event.Follow, SiteIDs: []string{siteA}, OccurredAt: "yesterday"}, wantField: "occurredAt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := enc.Encode(tt.req)
			if tt.want == "" {
				var inv *event.InvalidError
				if !errors.As(err, &inv) || inv.Field != tt.wantField {
					t.Fatalf("Encode: got %s, %v; want an *event.InvalidError naming %s", got, err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("Encode:\ngot  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		source, want string
	}{
		{"app", "sitefollow.requests.app"},
		{"hr-feed_2", "sitefollow.requests.hr-feed_2"},
		{strings.Repeat("s", 64), "sitefollow.requests." + strings.Repeat("s", 64)},
		{"", ""}, {"a.b", ""}, {"*", ""}, {">", ""}, {"a b", ""}, {"é", ""}, {"a\x00", ""}, {strings.Repeat("s", 65), ""},
	}
	for _, tt := range tests {
		got, err := Subject(tt.source)
		if tt.want == "" {
			if !errors.Is(err, ErrSource) {
				t.Errorf("Subject(%q): got %q, %v; want ErrSource", tt.source, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Subject(%q): got %q, %v; want %q", tt.source, got, err, tt.want)
		}
	}
}

func TestMsgID(t *testing.T) {
	t.Parallel()
	a, b := MsgID([]byte(`{"a":1}`)), MsgID([]byte(`{"a":2}`))
	if a != MsgID([]byte(`{"a":1}`)) {
		t.Errorf("MsgID: not stable for one body")
	}
	if a == b {
		t.Errorf("MsgID: got %q for two bodies, want distinct ids", a)
	}
	if !strings.HasPrefix(a, "sha256-") || len(a) != len("sha256-")+64 {
		t.Errorf("MsgID: got %q, want sha256- and 64 hex digits", a)
	}
}
