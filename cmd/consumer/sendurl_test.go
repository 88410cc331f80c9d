package main

import (
	"slices"
	"testing"
)

// TestSendRequestSplitsIDsAndURLs: --follow takes site ids and site URLs
// alike; URLs (even ones the decoder will refuse, like http://) go to
// siteUrls, so the decoder's message names the right field.
func TestSendRequestSplitsIDsAndURLs(t *testing.T) {
	const id = "contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-bfa80bee8740"
	tests := []struct {
		name     string
		sites    siteList
		wantIDs  []string
		wantURLs []string
	}{
		{name: "ids", sites: siteList{id}, wantIDs: []string{id}},
		{name: "urls", sites: siteList{"https://contoso.sharepoint.com/sites/Finance"}, wantURLs: []string{"https://contoso.sharepoint.com/sites/Finance"}},
		{name: "both", sites: siteList{"http://contoso.sharepoint.com", id}, wantIDs: []string{id}, wantURLs: []string{"http://contoso.sharepoint.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _, _, err := sendRequest("adele@contoso.com", tt.sites, nil, "app", "")
			if err != nil {
				t.Fatalf("sendRequest: %v", err)
			}
			if !slices.Equal(req.SiteIDs, tt.wantIDs) || !slices.Equal(req.SiteURLs, tt.wantURLs) {
				t.Errorf("siteIds %q, siteUrls %q; want %q, %q", req.SiteIDs, req.SiteURLs, tt.wantIDs, tt.wantURLs)
			}
		})
	}
}
