package graphsim

import (
	"net/http"
	"testing"
	"time"
)

// TestProvisionLater: a user not provisioned yet is answered as Graph
// answers new users, for the calls asked, then followed normally.
func TestProvisionLater(t *testing.T) {
	tests := []struct {
		name       string
		answer     NotProvisioned
		wantStatus int
		wantCode   string
		wantInner  string
		wantMsg    string
	}{
		{name: "mysite not found", answer: MysiteNotFound, wantStatus: http.StatusNotFound, wantCode: "itemNotFound", wantMsg: "User's mysite not found"},
		{name: "being provisioned", answer: BeingProvisioned, wantStatus: http.StatusBadRequest, wantCode: "invalidRequest", wantInner: "resourceBeingProvisioned"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, Options{Sites: []string{siteA}})
			s.ProvisionLater("Joiner@contoso.com", 2, time.Time{}, tt.answer)
			tok := fetchToken(t, s)
			for i := range 2 {
				got := call{op: "add", user: "joiner@contoso.com", ids: []string{siteA}, token: tok}.do(t, s)
				if got.status != tt.wantStatus {
					t.Fatalf("call %d status: got %d, want %d", i+1, got.status, tt.wantStatus)
				}
				e := got.wholeError(t)
				if e.Error.Code != tt.wantCode || e.Error.InnerError.Code != tt.wantInner {
					t.Errorf("call %d error: got %q/%q, want %q/%q", i+1, e.Error.Code, e.Error.InnerError.Code, tt.wantCode, tt.wantInner)
				}
				if tt.wantMsg != "" && e.Error.Message != tt.wantMsg {
					t.Errorf("call %d message: got %q, want %q", i+1, e.Error.Message, tt.wantMsg)
				}
			}
			if got := s.Followed("joiner@contoso.com"); len(got) != 0 {
				t.Errorf("followed while not provisioned: got %v, want none", got)
			}
			if got := (call{op: "add", user: "joiner@contoso.com", ids: []string{siteA}, token: tok}).do(t, s); got.status != http.StatusOK {
				t.Errorf("third call: got %d, want 200", got.status)
			}
			if got, want := s.NotProvisionedAnswers("JOINER@contoso.com"), 2; got != want {
				t.Errorf("NotProvisionedAnswers: got %d, want %d", got, want)
			}
		})
	}
}

// TestProvisionLaterUntil: a user visible only from a time is answered
// 404 before it, however many calls.
func TestProvisionLaterUntil(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}})
	tok := fetchToken(t, s)
	s.ProvisionLater("joiner", 0, time.Now().Add(time.Hour), MysiteNotFound)
	for i := range 3 {
		if got := (call{op: "remove", user: "joiner", ids: []string{siteA}, token: tok}).do(t, s); got.status != http.StatusNotFound {
			t.Fatalf("call %d: got %d, want 404", i+1, got.status)
		}
	}
	s.ProvisionLater("joiner", 0, time.Now().Add(-time.Second), MysiteNotFound)
	if got := (call{op: "add", user: "joiner", ids: []string{siteA}, token: tok}).do(t, s); got.status != http.StatusOK {
		t.Errorf("after visibleAt: got %d, want 200", got.status)
	}
}
