package event

import (
	"errors"
	"slices"
	"testing"
)

func TestSiteURLKey(t *testing.T) {
	tests := []struct{ a, b string }{
		{"https://contoso.sharepoint.com/sites/Finance", "https://CONTOSO.SharePoint.com/sites/Finance/"},
		{"https://contoso.sharepoint.com", "https://contoso.sharepoint.com/"},
		{"https://contoso.sharepoint.com//", "https://Contoso.sharepoint.com"},
	}
	for _, tt := range tests {
		if got, want := SiteURLKey(tt.a), SiteURLKey(tt.b); got != want {
			t.Errorf("SiteURLKey(%q) = %q, want %q (as for %q)", tt.a, got, want, tt.b)
		}
	}
	// The path keeps its case: only the hostname is case-insensitive.
	if a, b := SiteURLKey("https://h.example/sites/A"), SiteURLKey("https://h.example/sites/a"); a == b {
		t.Errorf("SiteURLKey folds the path's case: both %q", a)
	}
}

func TestSplitSiteURL(t *testing.T) {
	tests := []struct {
		url      string
		host     string
		segments []string
	}{
		{"https://contoso.sharepoint.com", "contoso.sharepoint.com", nil},
		{"https://contoso.sharepoint.com/", "contoso.sharepoint.com", nil},
		{"https://contoso.sharepoint.com/sites/My%20Site/", "contoso.sharepoint.com", []string{"sites", "My%20Site"}},
		{"https://contoso.sharepoint.com//teams/a%2Fb", "contoso.sharepoint.com", []string{"teams", "a%2Fb"}},
	}
	for _, tt := range tests {
		host, segs := SplitSiteURL(tt.url)
		if host != tt.host || !slices.Equal(segs, tt.segments) {
			t.Errorf("SplitSiteURL(%q) = %q, %q; want %q, %q", tt.url, host, segs, tt.host, tt.segments)
		}
	}
}

func TestDecodeSiteURLs(t *testing.T) {
	tests := []struct {
		name      string
		fields    map[string]any
		wantField string // "" means valid
		wantURLs  []string
	}{
		{name: "urls only", fields: map[string]any{"siteIds": absent, "siteUrls": []string{"https://c.example/sites/a"}},
			wantURLs: []string{"https://c.example/sites/a"}},
		{name: "repeats merged", fields: map[string]any{"siteIds": absent, "siteUrls": []string{"https://c.example/sites/a", "https://C.example/sites/a/", "https://c.example/sites/b"}},
			wantURLs: []string{"https://c.example/sites/a", "https://c.example/sites/b"}},
		{name: "neither", fields: map[string]any{"siteIds": absent}, wantField: "siteIds"},
		{name: "second url bad", fields: map[string]any{"siteUrls": []string{"https://c.example/a", "https://c.example/a?x"}}, wantField: "siteUrls[1]"},
		{name: "null", fields: map[string]any{"siteUrls": nil}, wantField: "siteUrls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := payload(t, tt.fields)
			req, err := Decoder{}.Decode(data)
			var ie *InvalidError
			switch {
			case tt.wantField == "" && err != nil:
				t.Fatalf("Decode(%s): %v", data, err)
			case tt.wantField != "" && !errors.As(err, &ie):
				t.Fatalf("Decode(%s) error = %v, want an *InvalidError", data, err)
			case tt.wantField != "" && ie.Field != tt.wantField:
				t.Fatalf("Decode(%s) field = %q, want %q (%v)", data, ie.Field, tt.wantField, err)
			}
			if tt.wantField == "" && !slices.Equal(req.SiteURLs, tt.wantURLs) {
				t.Errorf("SiteURLs = %q, want %q", req.SiteURLs, tt.wantURLs)
			}
		})
	}
}
