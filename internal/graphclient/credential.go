package graphclient

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
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

// Credential kinds, as SITEFOLLOW_CREDENTIAL names them once auto is
// resolved.
const (
	CredentialSecret      = "secret"
	CredentialCertificate = "certificate"
	CredentialWorkload    = "workload"
	CredentialManaged     = "managed"
)

// CredentialConfig holds the app-only credential settings, read from the
// standard Azure environment by internal/config.
type CredentialConfig struct {
	// Kind is one of the Credential constants; empty means secret.
	Kind         string
	TenantID     string // AZURE_TENANT_ID
	ClientID     string // AZURE_CLIENT_ID; for managed, a user-assigned identity (empty: system-assigned)
	ClientSecret string // AZURE_CLIENT_SECRET
	// CertificatePath is AZURE_CLIENT_CERTIFICATE_PATH: PEM or PKCS#12
	// holding the certificate and its private key; CertificatePassword
	// decrypts the key, and SendCertificateChain sends the x5c header
	// (subject name/issuer authentication).
	CertificatePath      string
	CertificatePassword  string
	SendCertificateChain bool
	// FederatedTokenFile is AZURE_FEDERATED_TOKEN_FILE, which AKS workload
	// identity mounts and rotates; it is read again for every token.
	FederatedTokenFile string
	// AuthorityHost defaults to DefaultAuthorityHost.
	AuthorityHost string
	// HTTPClient optionally carries the requests to Entra, e.g. a client
	// trusting an extra CA.
	HTTPClient *http.Client
}

// NewCredential builds the app-only credential of cfg.Kind. For an
// authority other than the public Microsoft clouds it disables instance
// discovery, which would otherwise ask login.microsoftonline.com about the
// authority first and fail for private or offline test authorities.
// Managed identity asks the host's identity endpoint, not the authority.
func NewCredential(cfg CredentialConfig) (azcore.TokenCredential, error) {
	kind := orDefault(cfg.Kind, CredentialSecret)
	var missing []string
	need := func(v, name string) {
		if v == "" {
			missing = append(missing, name)
		}
	}
	switch kind {
	case CredentialSecret:
		need(cfg.TenantID, "AZURE_TENANT_ID")
		need(cfg.ClientID, "AZURE_CLIENT_ID")
		need(cfg.ClientSecret, "AZURE_CLIENT_SECRET")
	case CredentialCertificate:
		need(cfg.TenantID, "AZURE_TENANT_ID")
		need(cfg.ClientID, "AZURE_CLIENT_ID")
		need(cfg.CertificatePath, "AZURE_CLIENT_CERTIFICATE_PATH")
	case CredentialWorkload:
		need(cfg.TenantID, "AZURE_TENANT_ID")
		need(cfg.ClientID, "AZURE_CLIENT_ID")
		need(cfg.FederatedTokenFile, "AZURE_FEDERATED_TOKEN_FILE")
	case CredentialManaged:
	default:
		return nil, fmt.Errorf("graphclient: new credential: unknown kind %q", kind)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("graphclient: new %s credential: missing %s", kind, strings.Join(missing, ", "))
	}
	host := orDefault(cfg.AuthorityHost, DefaultAuthorityHost)
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("graphclient: new credential: authority host %q: %w", redactURL(host), urlParseCause(err))
	}
	if !strings.EqualFold(u.Scheme, "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("graphclient: new credential: authority host %q must be an https URL without credentials", redactURL(host))
	}
	client := azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: host}}
	if cfg.HTTPClient != nil {
		client.Transport = cfg.HTTPClient
	}
	disableDiscovery := !isPublicAuthority(u)
	var cred azcore.TokenCredential
	switch kind {
	case CredentialSecret:
		cred, err = azidentity.NewClientSecretCredential(cfg.TenantID, cfg.ClientID, cfg.ClientSecret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: client, DisableInstanceDiscovery: disableDiscovery})
	case CredentialCertificate:
		cred, err = newCertificateCredential(cfg, client, disableDiscovery)
	case CredentialWorkload:
		cred, err = azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions: client, DisableInstanceDiscovery: disableDiscovery,
			TenantID: cfg.TenantID, ClientID: cfg.ClientID, TokenFilePath: cfg.FederatedTokenFile,
		})
	case CredentialManaged:
		opts := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: client}
		if cfg.ClientID != "" {
			opts.ID = azidentity.ClientID(cfg.ClientID)
		}
		cred, err = azidentity.NewManagedIdentityCredential(opts)
	}
	if err != nil {
		return nil, fmt.Errorf("graphclient: new %s credential: %w", kind, err)
	}
	return cred, nil
}

// newCertificateCredential reads the certificate file (PEM or PKCS#12) and
// builds the client-certificate credential, which signs each assertion
// with the certificate's key.
func newCertificateCredential(cfg CredentialConfig, client azcore.ClientOptions, disableDiscovery bool) (azcore.TokenCredential, error) {
	data, err := os.ReadFile(cfg.CertificatePath)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	var password []byte
	if cfg.CertificatePassword != "" {
		password = []byte(cfg.CertificatePassword)
	}
	certs, key, err := azidentity.ParseCertificates(data, password)
	if err != nil {
		return nil, fmt.Errorf("parse certificate %s: %w", cfg.CertificatePath, err)
	}
	return azidentity.NewClientCertificateCredential(cfg.TenantID, cfg.ClientID, certs, key,
		&azidentity.ClientCertificateCredentialOptions{
			ClientOptions: client, DisableInstanceDiscovery: disableDiscovery, SendCertificateChain: cfg.SendCertificateChain,
		})
}

// isPublicAuthority reports whether u is the authority of a public
// Microsoft cloud, which instance discovery can validate.
func isPublicAuthority(u *url.URL) bool {
	return publicAuthorityHosts[strings.ToLower(u.Hostname())]
}

// errNoCredential is returned by New when Config.Credential is nil.
var errNoCredential = errors.New("graphclient: new: credential is required")
