package graphsim

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestIMDSEndpoint checks what IMDS refuses: a request without the
// Metadata header (a forged server-side request cannot set it), a method
// other than GET, a missing resource, an identity the host does not have.
func TestIMDSEndpoint(t *testing.T) {
	t.Parallel()
	s := newSim(t, Options{ClientID: "C1"})
	tests := []struct {
		name       string
		method     string
		query      string
		metadata   bool
		wantStatus int
		wantError  string
	}{
		{"system-assigned", http.MethodGet, "api-version=2018-02-01&resource=https://graph.microsoft.com", true, 200, ""},
		{"user-assigned", http.MethodGet, "api-version=2018-02-01&resource=https://graph.microsoft.com&client_id=C1", true, 200, ""},
		{"no metadata header", http.MethodGet, "api-version=2018-02-01&resource=https://graph.microsoft.com", false, 400, "invalid_request"},
		{"post", http.MethodPost, "api-version=2018-02-01&resource=https://graph.microsoft.com", true, 405, "invalid_request"},
		{"no resource", http.MethodGet, "api-version=2018-02-01", true, 400, "invalid_request"},
		{"identity the host does not have", http.MethodGet, "api-version=2018-02-01&resource=https://graph.microsoft.com&client_id=C2", true, 400, "invalid_request"},
	}
	client := s.IMDSHTTPClient()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, "http://"+IMDSAddr+imdsPath+"?"+tc.query, nil)
			if err != nil {
				t.Fatalf("new request: %v", err)
			}
			if tc.metadata {
				req.Header.Set("Metadata", "true")
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("do: %v", err)
			}
			defer closeBody(t, resp)
			var out struct {
				Error       string `json:"error"`
				AccessToken string `json:"access_token"`
				ExpiresOn   string `json:"expires_on"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if resp.StatusCode != tc.wantStatus || out.Error != tc.wantError {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, out.Error, tc.wantStatus, tc.wantError)
			}
			if tc.wantStatus == http.StatusOK && (out.AccessToken == "" || out.ExpiresOn == "") {
				t.Errorf("token: got %+v, want an access token with expires_on", out)
			}
		})
	}
}
