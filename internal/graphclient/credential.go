package graphclient

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// DefaultAuthorityHost is the Entra authority of Microsoft's global cloud.
const DefaultAuthorityHost = "https://login.microsoftonline.com/"

// publicAuthorityHosts are the Entra authorities of Microsoft's public
// clouds, the only ones azidentity's instance discovery knows.
var publicAuthorityHosts = map[string]bool{
	"login.microsoftonline.com": true,
	"login.microsoftonline.us":  true,
	"login.chinacloudapi.cn":    true,
}

// CredentialConfig holds the standard app-only client-credentials settings.
type CredentialConfig struct {
	TenantID     string // AZURE_TENANT_ID
	ClientID     string // AZURE_CLIENT_ID
	ClientSecret string // AZURE_CLIENT_SECRET
	// AuthorityHost defaults to DefaultAuthorityHost.
	AuthorityHost string
	// HTTPClient optionally carries the requests to Entra, e.g. a client
	// trusting an extra CA.
	HTTPClient *http.Client
}

// NewCredential builds the app-only client-secret credential. For an
// authority other than the public Microsoft clouds it disables instance
// discovery, which would otherwise ask login.microsoftonline.com about the
// authority first and fail for private or offline test authorities.
func NewCredential(cfg CredentialConfig) (azcore.TokenCredential, error) {
	var missing []string
	if cfg.TenantID == "" {
		missing = append(missing, "AZURE_TENANT_ID")
	}
	if cfg.ClientID == "" {
		missing = append(missing, "AZURE_CLIENT_ID")
	}
	if cfg.ClientSecret == "" {
		missing = append(missing, "AZURE_CLIENT_SECRET")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("graphclient: new credential: missing %s", strings.Join(missing, ", "))
	}
	host := orDefault(cfg.AuthorityHost, DefaultAuthorityHost)
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("graphclient: new credential: authority host %q: %w", redactURL(host), urlParseCause(err))
	}
	if !strings.EqualFold(u.Scheme, "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("graphclient: new credential: authority host %q must be an https URL without credentials", redactURL(host))
	}
	opts := &azidentity.ClientSecretCredentialOptions{
		ClientOptions: azcore.ClientOptions{
			Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: host},
		},
		DisableInstanceDiscovery: !isPublicAuthority(u),
	}
	if cfg.HTTPClient != nil {
		opts.Transport = cfg.HTTPClient
	}
	cred, err := azidentity.NewClientSecretCredential(cfg.TenantID, cfg.ClientID, cfg.ClientSecret, opts)
	if err != nil {
		return nil, fmt.Errorf("graphclient: new credential: %w", err)
	}
	return cred, nil
}

// isPublicAuthority reports whether u is the authority of a public
// Microsoft cloud, which instance discovery can validate.
func isPublicAuthority(u *url.URL) bool {
	return publicAuthorityHosts[strings.ToLower(u.Hostname())]
}

// errNoCredential is returned by New when Config.Credential is nil.
var errNoCredential = errors.New("graphclient: new: credential is required")
