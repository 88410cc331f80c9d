package dlq

import (
	"strings"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
)

func TestSubject(t *testing.T) {
	tests := []struct {
		code, want string
	}{
		{"invalidRequest", "sitefollow.dlq.invalidRequest"},
		{"retriesExhausted", "sitefollow.dlq.retriesExhausted"},
		{"Request_ResourceNotFound", "sitefollow.dlq.Request_ResourceNotFound"},
		{"accessdenied", "sitefollow.dlq.accessDenied"},
		{"a.b*c>d e", "sitefollow.dlq.other"},
		{"", "sitefollow.dlq.other"},
		{strings.Repeat("x", 4096), "sitefollow.dlq.other"},
	}
	for _, tt := range tests {
		if got := Subject("sitefollow.dlq", tt.code); got != tt.want {
			t.Errorf("Subject(%q): got %q, want %q", tt.code, got, tt.want)
		}
	}
}

func TestMsgIDIsPerOriginAndSite(t *testing.T) {
	created := time.Unix(1700000000, 5)
	base := event.DeadLetter{Origin: event.Origin{Stream: "SITEFOLLOW", Sequence: 42, StreamCreated: created}}
	recreated := base
	recreated.Origin.StreamCreated = created.Add(time.Second)
	site := "contoso.sharepoint.com,DA60E844-BA1D-49BC-B4D4-D5E36BAE9019,712a596e-90a1-49e3-9b48-bfa80bee8740"
	withSite := base
	withSite.SiteID = site
	tests := []struct {
		name string
		d    event.DeadLetter
		want string
	}{
		{"whole event", base, "sitefollow-dlq:SITEFOLLOW:1700000000000000005:42:event"},
		{"same sequence in a re-created stream", recreated, "sitefollow-dlq:SITEFOLLOW:1700000001000000005:42:event"},
		{"site, case-folded so a redelivery matches", withSite,
			"sitefollow-dlq:SITEFOLLOW:1700000000000000005:42:contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-bfa80bee8740"},
	}
	for _, tt := range tests {
		if got := MsgID(tt.d); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}
