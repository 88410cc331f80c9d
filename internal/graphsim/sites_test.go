package graphsim

import (
	"encoding/json"
	"net/http"
	"testing"
)

func TestServeSite(t *testing.T) {
	t.Parallel()
	const id = "contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-bfa80bee8740"
	s := newSim(t, Options{SiteURLs: map[string]string{
		"https://contoso.sharepoint.com/sites/My Site": id,
		"https://Contoso.sharepoint.com/":              id,
	}})
	token := fetchToken(t, s)
	tests := []struct {
		name       string
		path       string
		token      string
		wantStatus int
		wantCode   string // error code, for errors
		wantURL    string // Call.SiteURL
	}{
		{name: "path", path: "/v1.0/sites/contoso.sharepoint.com:/sites/My%20Site?$select=id", token: token, wantStatus: 200,
			wantURL: "https://contoso.sharepoint.com/sites/My Site"},
		{name: "root", path: "/v1.0/sites/CONTOSO.sharepoint.com", token: token, wantStatus: 200, wantURL: "https://contoso.sharepoint.com"},
		{name: "unknown", path: "/v1.0/sites/contoso.sharepoint.com:/sites/Other", token: token, wantStatus: 404, wantCode: "itemNotFound",
			wantURL: "https://contoso.sharepoint.com/sites/Other"},
		{name: "no token", path: "/v1.0/sites/contoso.sharepoint.com", wantStatus: 401, wantCode: "InvalidAuthenticationToken",
			wantURL: "https://contoso.sharepoint.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.CallCount()
			r := call{method: http.MethodGet, path: tt.path, token: tt.token}.do(t, s)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.wantStatus, r.body)
			}
			if tt.wantCode != "" {
				if got := r.wholeError(t).Error.Code; got != tt.wantCode {
					t.Errorf("error code = %q, want %q", got, tt.wantCode)
				}
			} else {
				var site struct {
					ID string `json:"id"`
				}
				if err := json.Unmarshal(r.body, &site); err != nil || site.ID != id {
					t.Errorf("body %s: id %q (%v), want %q", r.body, site.ID, err, id)
				}
			}
			calls := s.Calls()[before:]
			if len(calls) != 1 || calls[0].Op != OpGetSite || calls[0].SiteURL != tt.wantURL || calls[0].Status != tt.wantStatus {
				t.Errorf("calls = %+v, want one %s of %s answered %d", calls, OpGetSite, tt.wantURL, tt.wantStatus)
			}
		})
	}
}
