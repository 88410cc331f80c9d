package graphsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
)

// batchReq is one request of a test envelope; a nil Headers map sends the
// JSON Content-Type.
type batchReq struct {
	ID      string            `json:"id"`
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"`
}

// addReq is a well-formed add request for user and ids.
func addReq(t *testing.T, id, user string, ids ...string) batchReq {
	t.Helper()
	return batchReq{ID: id, Method: http.MethodPost, URL: "/users/" + url.PathEscape(user) + "/followedSites/add",
		Headers: map[string]string{"content-type": "application/json"}, Body: json.RawMessage(idsBody(t, ids...))}
}

// envelopeAnswer is the decoded answer of a $batch.
type envelopeAnswer struct {
	Responses []struct {
		ID      string            `json:"id"`
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	} `json:"responses"`
}

// postBatch sends reqs in one envelope with token.
func postBatch(t *testing.T, s *Server, token string, reqs []batchReq) (result, envelopeAnswer) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"requests": reqs})
	if err != nil {
		t.Fatalf("marshal envelope: %v", err)
	}
	res := call{path: "/v1.0/$batch", body: string(body), token: token}.do(t, s)
	var ans envelopeAnswer
	if res.status == http.StatusOK {
		if err := json.Unmarshal(res.body, &ans); err != nil {
			t.Fatalf("envelope answer %s: %v", res.body, err)
		}
	}
	return res, ans
}

// statusByID is each inner answer's status by id.
func (a envelopeAnswer) statusByID() map[string]int {
	out := map[string]int{}
	for _, r := range a.Responses {
		out[r.ID] = r.Status
	}
	return out
}

func TestBatchEnvelopeRefusedWhole(t *testing.T) {
	t.Parallel()
	s := newSim(t, Options{Sites: []string{siteA}})
	token := fetchToken(t, s)
	many := make([]batchReq, MaxBatchRequests+1)
	for i := range many {
		many[i] = addReq(t, fmt.Sprint(i+1), fmt.Sprintf("u%d", i), siteA)
	}
	tests := []struct {
		name   string
		token  string
		reqs   []batchReq
		status int
	}{
		{name: "21 requests", token: token, reqs: many, status: http.StatusBadRequest},
		{name: "ids repeated, case aside", token: token, reqs: []batchReq{addReq(t, "a", "u1", siteA), addReq(t, "A", "u2", siteA)}, status: http.StatusBadRequest},
		{name: "no requests", token: token, reqs: []batchReq{}, status: http.StatusBadRequest},
		{name: "no id", token: token, reqs: []batchReq{addReq(t, "", "u1", siteA)}, status: http.StatusBadRequest},
		{name: "no token", reqs: []batchReq{addReq(t, "1", "u1", siteA)}, status: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Reset()
			res, _ := postBatch(t, s, tt.token, tt.reqs)
			if res.status != tt.status {
				t.Fatalf("status: got %d, want %d (%.200s)", res.status, tt.status, res.body)
			}
			if got := s.CallCount(); got != 0 {
				t.Errorf("calls recorded: got %d, want 0", got)
			}
			if got := s.HTTPRequests(); got != 1 {
				t.Errorf("HTTP requests: got %d, want 1", got)
			}
		})
	}
	if got := s.Followed("u1"); len(got) != 0 {
		t.Errorf("a refused envelope followed %v", got)
	}
}

func TestBatchRequestsJudgedOnTheirOwn(t *testing.T) {
	t.Parallel()
	s := newSim(t, Options{Sites: []string{siteA, siteB}})
	token := fetchToken(t, s)
	absolute := addReq(t, "abs", "u2", siteA)
	absolute.URL = s.GraphURL() + "/v1.0/users/u2/followedSites/add"
	versioned := addReq(t, "ver", "u3", siteA)
	versioned.URL = "/v1.0/users/u3/followedSites/add"
	noType := addReq(t, "notype", "u4", siteA)
	noType.Headers = nil
	remove := batchReq{ID: "rm", Method: http.MethodPost, URL: "/users/u5/followedSites/remove",
		Headers: map[string]string{"Content-Type": "application/json"}, Body: json.RawMessage(idsBody(t, siteA))}
	s.SetFollowed("u5", siteA)
	res, ans := postBatch(t, s, token, []batchReq{addReq(t, "ok", "u1", siteA, siteB), absolute, versioned, noType, remove,
		addReq(t, "unknown", "u6", siteA, "contoso.sharepoint.com,00000000-0000-4000-8000-000000000000,00000000-0000-4000-8000-000000000001")})
	if res.status != http.StatusOK {
		t.Fatalf("envelope status: got %d, want 200 (%.200s)", res.status, res.body)
	}
	want := map[string]int{"ok": 200, "abs": 400, "ver": 400, "notype": 400, "rm": 204, "unknown": 207}
	if got := ans.statusByID(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("statuses: got %v, want %v", got, want)
	}
	if got := len(s.Followed("u1")); got != 2 {
		t.Errorf("u1 follows %d sites, want 2", got)
	}
	for _, u := range []string{"u2", "u3", "u4", "u5"} {
		if got := s.Followed(u); len(got) != 0 {
			t.Errorf("%s follows %v, want nothing", u, got)
		}
	}
	calls := s.Calls()
	if len(calls) != len(want) {
		t.Fatalf("calls: got %d, want %d", len(calls), len(want))
	}
	for _, c := range calls {
		if c.HTTPRequest != 1 || c.BatchItemID == "" || c.Status != want[c.BatchItemID] {
			t.Errorf("call %s: HTTPRequest %d, status %d; want 1 and %d", c.BatchItemID, c.HTTPRequest, c.Status, want[c.BatchItemID])
		}
	}
}

// TestBatchInnerBudget checks that each request of an envelope spends the
// budget on its own: a bucket of two admits two of three, and the third
// gets its own 429 with Retry-After.
func TestBatchInnerBudget(t *testing.T) {
	t.Parallel()
	s := newSim(t, Options{Sites: []string{siteA}, Budget: Budget{Shape: TokenBucket, Rate: 0.5, Burst: 2, RetryAfter: RetryAfterWholeSeconds}})
	token := fetchToken(t, s)
	_, ans := postBatch(t, s, token, []batchReq{addReq(t, "1", "u1", siteA), addReq(t, "2", "u2", siteA), addReq(t, "3", "u3", siteA)})
	got := ans.statusByID()
	want := map[string]int{"1": 200, "2": 200, "3": 429}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("statuses: got %v, want %v", got, want)
	}
	for _, r := range ans.Responses {
		if r.ID == "3" && r.Headers["Retry-After"] == "" {
			t.Errorf("the throttled request's headers %v carry no Retry-After", r.Headers)
		}
	}
	if got := s.CallCount(); got != 3 {
		t.Errorf("calls: got %d, want 3", got)
	}
	if got := s.HTTPRequests(); got != 1 {
		t.Errorf("HTTP requests: got %d, want 1", got)
	}
	if got := len(s.Followed("u3")); got != 0 {
		t.Errorf("the throttled request followed %d sites", got)
	}
}
