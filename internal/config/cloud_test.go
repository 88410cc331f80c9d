package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCloudSetsHostsAndScope(t *testing.T) {
	tests := []struct {
		cloud, graph, authority, scope string
	}{
		{"", "https://graph.microsoft.com", "https://login.microsoftonline.com/", "https://graph.microsoft.com/.default"},
		{"global", "https://graph.microsoft.com", "https://login.microsoftonline.com/", "https://graph.microsoft.com/.default"},
		{"usgov", "https://graph.microsoft.us", "https://login.microsoftonline.us/", "https://graph.microsoft.us/.default"},
		{"usgovdod", "https://dod-graph.microsoft.us", "https://login.microsoftonline.us/", "https://dod-graph.microsoft.us/.default"},
		{"china", "https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn/", "https://microsoftgraph.chinacloudapi.cn/.default"},
	}
	for _, tt := range tests {
		t.Run(tt.cloud, func(t *testing.T) {
			c, err := load(t, nil, map[string]string{"SITEFOLLOW_CLOUD": tt.cloud})
			if err != nil {
				t.Fatalf("Load(SITEFOLLOW_CLOUD=%q) = %v", tt.cloud, err)
			}
			if got := [3]string{c.GraphURL, c.AuthorityHost, c.GraphScope()}; got != [3]string{tt.graph, tt.authority, tt.scope} {
				t.Errorf("graph, authority, scope = %q, want %q", got, [3]string{tt.graph, tt.authority, tt.scope})
			}
		})
	}
}

// TestCloudOverridesChangeHostsOnly: a private endpoint or the simulator
// keeps the chosen cloud's scope.
func TestCloudOverridesChangeHostsOnly(t *testing.T) {
	c, err := load(t, []string{"--cloud=usgov", "--graph-url=https://graph.private.example.test/", "--authority-host=https://127.0.0.1:8443"}, nil)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if c.GraphURL != "https://graph.private.example.test" || c.AuthorityHost != "https://127.0.0.1:8443/" {
		t.Errorf("graph, authority = %q, %q, want the overrides", c.GraphURL, c.AuthorityHost)
	}
	if got, want := c.GraphScope(), "https://graph.microsoft.us/.default"; got != want {
		t.Errorf("GraphScope() = %q, want %q", got, want)
	}
}

func TestCloudMismatchRefused(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		setting string
		want    []string // substrings: both clouds
	}{
		{"global cloud, usgov graph", map[string]string{"SITEFOLLOW_GRAPH_URL": "https://graph.microsoft.us"}, "SITEFOLLOW_GRAPH_URL", []string{"cloud usgov", "--cloud is global", "https://graph.microsoft.com/.default"}},
		{"usgov cloud, global graph", map[string]string{"SITEFOLLOW_CLOUD": "usgov", "SITEFOLLOW_GRAPH_URL": "https://GRAPH.microsoft.com/"}, "SITEFOLLOW_GRAPH_URL", []string{"cloud global", "SITEFOLLOW_CLOUD is usgov", "https://graph.microsoft.us/.default"}},
		{"dod cloud, l4 graph", map[string]string{"SITEFOLLOW_CLOUD": "usgovdod", "SITEFOLLOW_GRAPH_URL": "https://graph.microsoft.us"}, "SITEFOLLOW_GRAPH_URL", []string{"cloud usgov", "SITEFOLLOW_CLOUD is usgovdod"}},
		{"china cloud, global authority", map[string]string{"SITEFOLLOW_CLOUD": "china", "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com/"}, "AZURE_AUTHORITY_HOST", []string{"cloud global", "SITEFOLLOW_CLOUD is china"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, nil, tt.env)
			assertNames(t, err, tt.setting)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestCredentialKind(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"auto: secret first", map[string]string{"AZURE_CLIENT_CERTIFICATE_PATH": file, "AZURE_FEDERATED_TOKEN_FILE": file}, CredentialSecret},
		{"auto: certificate second", map[string]string{"AZURE_CLIENT_SECRET": "", "AZURE_CLIENT_CERTIFICATE_PATH": file, "AZURE_FEDERATED_TOKEN_FILE": file}, CredentialCertificate},
		{"auto: federated token third", map[string]string{"AZURE_CLIENT_SECRET": "", "AZURE_FEDERATED_TOKEN_FILE": file}, CredentialWorkload},
		{"auto: managed identity last", map[string]string{"AZURE_CLIENT_SECRET": ""}, CredentialManaged},
		{"forced certificate wins over a secret", map[string]string{"SITEFOLLOW_CREDENTIAL": "certificate", "AZURE_CLIENT_CERTIFICATE_PATH": file}, CredentialCertificate},
		{"forced workload wins over a secret and a certificate", map[string]string{"SITEFOLLOW_CREDENTIAL": "workload", "AZURE_CLIENT_CERTIFICATE_PATH": file, "AZURE_FEDERATED_TOKEN_FILE": file}, CredentialWorkload},
		{"forced managed wins over everything", map[string]string{"SITEFOLLOW_CREDENTIAL": "managed", "AZURE_CLIENT_CERTIFICATE_PATH": file, "AZURE_FEDERATED_TOKEN_FILE": file}, CredentialManaged},
		{"forced secret", map[string]string{"SITEFOLLOW_CREDENTIAL": "secret", "AZURE_FEDERATED_TOKEN_FILE": file}, CredentialSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, nil, tt.env)
			if err != nil {
				t.Fatalf("Load = %v", err)
			}
			if got := c.CredentialKind(); got != tt.want {
				t.Errorf("CredentialKind() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestForcedCredentialNeedsItsInput(t *testing.T) {
	tests := []struct {
		kind, setting string
	}{
		{"secret", "AZURE_CLIENT_SECRET"},
		{"certificate", "AZURE_CLIENT_CERTIFICATE_PATH"},
		{"workload", "AZURE_FEDERATED_TOKEN_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			_, err := load(t, nil, map[string]string{"SITEFOLLOW_CREDENTIAL": tt.kind, "AZURE_CLIENT_SECRET": ""})
			assertNames(t, err, tt.setting)
			if want := "is required with SITEFOLLOW_CREDENTIAL " + tt.kind; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		})
	}
}
