package graphclient

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// TestUserNotVisibleClassification: a whole call Graph answers as if the
// user did not exist yet is Rejected with CodeUserNotFound, what Graph said
// kept in the message; a per-site 207 entry, even itemNotFound, is not.
func TestUserNotVisibleClassification(t *testing.T) {
	tests := []struct {
		name     string
		op       Operation
		answer   answer
		wantCode string
		// wantSaid are parts of Graph's answer the message must keep.
		wantSaid []string
		// unresolved: the answer leaves the site open rather than Rejected.
		unresolved bool
	}{
		{name: "404 itemNotFound on the user", op: Add,
			answer:   rawBody(404, `{"error":{"code":"Request_ResourceNotFound","message":"Resource 'ann' does not exist","innerError":{"code":"itemNotFound"}}}`),
			wantCode: CodeUserNotFound, wantSaid: []string{"404", "Request_ResourceNotFound", "itemNotFound", "Resource 'ann' does not exist"}},
		{name: "404 mysite not found", op: Add,
			answer:   rawBody(404, `{"error":{"code":"itemNotFound","message":"User's mysite not found."}}`),
			wantCode: CodeUserNotFound, wantSaid: []string{"itemNotFound", "User's mysite not found."}},
		{name: "404 on remove", op: Remove,
			answer:   rawBody(404, `{"error":{"code":"itemNotFound","message":"Item not found"}}`),
			wantCode: CodeUserNotFound, wantSaid: []string{"itemNotFound"}},
		{name: "404 without a body", op: Add, answer: status(404),
			wantCode: CodeUserNotFound, wantSaid: []string{"404"}},
		{name: "404 with another code", op: Add,
			answer:   rawBody(404, `{"error":{"code":"NotFound","message":"nope"}}`),
			wantCode: CodeUserNotFound, wantSaid: []string{"NotFound", "nope"}},
		{name: "400 resourceBeingProvisioned detailed code", op: Add,
			answer:   rawBody(400, `{"error":{"code":"invalidRequest","message":"wait","innerError":{"code":"resourceBeingProvisioned"}}}`),
			wantCode: CodeUserNotFound, wantSaid: []string{"400", "invalidRequest", "resourceBeingProvisioned"}},
		{name: "403 resourceBeingProvisioned code", op: Add,
			answer:   rawBody(403, `{"error":{"code":"resourceBeingProvisioned","message":"being made"}}`),
			wantCode: CodeUserNotFound, wantSaid: []string{"403", "resourceBeingProvisioned"}},
		{name: "deep detailed code", op: Add,
			answer:   rawBody(400, `{"error":{"code":"a","innerError":{"code":"b","innerError":{"code":"ResourceBeingProvisioned"}}}}`),
			wantCode: CodeUserNotFound, wantSaid: []string{"a b ResourceBeingProvisioned"}},
		{name: "mysite message fallback on 400", op: Add,
			answer:   rawBody(400, `{"error":{"code":"generalException","message":"User's mysite not found."}}`),
			wantCode: CodeUserNotFound, wantSaid: []string{"generalException", "mysite"}},
		{name: "403 accessDenied is not", op: Add,
			answer:   rawBody(403, `{"error":{"code":"accessDenied","message":"no"}}`),
			wantCode: "accessDenied"},
		{name: "401 with a mysite message is not", op: Add,
			answer:   rawBody(401, `{"error":{"code":"InvalidAuthenticationToken","message":"User's mysite not found"}}`),
			wantCode: CodeUnauthenticated, unresolved: true},
		{name: "503 naming provisioning is transient, not", op: Add,
			answer:   rawBody(503, `{"error":{"code":"serviceNotAvailable","message":"User's mysite not found","innerError":{"code":"resourceBeingProvisioned"}}}`),
			wantCode: "serviceNotAvailable", unresolved: true},
		{name: "207 itemNotFound entry is not", op: Add,
			answer: func(w http.ResponseWriter, ids []string) {
				writeJSON(w, 207, map[string]any{"value": []map[string]any{
					{"id": ids[0], "error": map[string]string{"code": "itemNotFound", "message": "User's mysite not found"}},
				}})
			},
			wantCode: "itemNotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := newScriptedGraph(t, tt.answer)
			c := newScriptedClient(t, g, &countingCredential{}, nil)

			got := c.Apply(context.Background(), "ann@contoso.com", tt.op, siteIDs(1, 1))

			wantOutcome := Rejected
			if tt.unresolved {
				wantOutcome = Unresolved
			}
			if len(got) != 1 || got[0].Outcome != wantOutcome || got[0].Err == nil {
				t.Fatalf("got %+v, want one %v result", got, wantOutcome)
			}
			e := got[0].Err
			if e.Code != tt.wantCode {
				t.Errorf("code: got %q, want %q (message %q)", e.Code, tt.wantCode, e.Message)
			}
			for _, part := range tt.wantSaid {
				if !strings.Contains(e.Message, part) {
					t.Errorf("message: got %q, want it to contain %q", e.Message, part)
				}
			}
			if n := len(g.requests()); tt.wantCode == CodeUserNotFound && n != 1 {
				t.Errorf("calls: got %d, want 1 (the caller decides when to ask again)", n)
			}
		})
	}
}

// TestUserNotVisibleKeepsRequestIDs: the classified error still carries the
// answer's status and request ids, for the dead letter.
func TestUserNotVisibleKeepsRequestIDs(t *testing.T) {
	g := newScriptedGraph(t, graphErr(404, "Request_ResourceNotFound"))
	c := newScriptedClient(t, g, &countingCredential{}, nil)

	e := c.Apply(context.Background(), "ghost", Add, siteIDs(1, 1))[0].Err
	if e == nil || e.HTTPStatus != 404 || e.RequestID != "req-1" || e.ClientRequestID != g.requests()[0].header.Get("client-request-id") {
		t.Errorf("err = %+v, want status 404, the answer's request-id and our client-request-id", e)
	}
	if want := "graph answered 404 Request_ResourceNotFound: scripted Request_ResourceNotFound"; e != nil && e.Message != want {
		t.Errorf("message: got %q, want %q", e.Message, want)
	}
}

// TestUserNotVisibleOnEveryAPI: the simulator's not-provisioned answers
// are userNotFound for v1 and the beta followingSites PATCH alike, and the
// user's calls go through once it is visible.
func TestUserNotVisibleOnEveryAPI(t *testing.T) {
	tests := []struct {
		name   string
		api    API
		answer graphsim.NotProvisioned
		calls  int // per ApplyMixed: v1 adds, then removes
	}{
		{name: "v1 mysite", api: APIV1, answer: graphsim.MysiteNotFound, calls: 2},
		{name: "v1 being provisioned", api: APIV1, answer: graphsim.BeingProvisioned, calls: 2},
		{name: "beta mysite", api: APIBetaFollowingSites, answer: graphsim.MysiteNotFound, calls: 1},
		{name: "beta being provisioned", api: APIBetaFollowingSites, answer: graphsim.BeingProvisioned, calls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := newSim(t)
			sim.ProvisionLater("joiner@contoso.com", tt.calls, time.Time{}, tt.answer)
			c := newSimClient(t, sim, func(cfg *Config) { cfg.API = tt.api })
			ids := siteIDs(1, 2)

			got := c.ApplyMixed(context.Background(), "joiner@contoso.com", ids[:1], ids[1:])
			for i, r := range got {
				if r.Outcome != Rejected || r.Err == nil || r.Err.Code != CodeUserNotFound {
					t.Errorf("site %d: got %v %+v, want Rejected %s", i, r.Outcome, r.Err, CodeUserNotFound)
				}
			}
			got = c.ApplyMixed(context.Background(), "joiner@contoso.com", ids[:1], ids[1:])
			for i, r := range got {
				if r.Outcome != Applied {
					t.Errorf("site %d once visible: got %v %+v, want Applied", i, r.Outcome, r.Err)
				}
			}
		})
	}
}
