package graphclient_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/sitefollow/sitefollow/internal/graphclient"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// graphScope is the global cloud's; the sim takes any ".default" scope.
const graphScope = "https://graph.microsoft.com/.default"

// TestCredentialKinds gets a token of each kind from the simulator's token
// endpoint over HTTPS, and has the endpoint refuse the wrong proof.
func TestCredentialKinds(t *testing.T) {
	t.Parallel()
	registered := testkit.NewClientCertificate(t, "sitefollow")
	stranger := testkit.NewClientCertificate(t, "stranger")
	issuer := testkit.NewFederatedIssuer(t)
	otherIssuer := testkit.NewFederatedIssuer(t)
	tests := []struct {
		name      string
		cfg       func(sim *graphsim.Server) graphclient.CredentialConfig
		wantGrant string // "" when the token must be refused
		wantErr   string
	}{
		{"secret", func(sim *graphsim.Server) graphclient.CredentialConfig {
			return graphclient.CredentialConfig{Kind: graphclient.CredentialSecret, ClientSecret: sim.ClientSecret()}
		}, graphsim.GrantSecret, ""},
		{"wrong secret", func(*graphsim.Server) graphclient.CredentialConfig {
			return graphclient.CredentialConfig{Kind: graphclient.CredentialSecret, ClientSecret: "not-it"}
		}, "", "AADSTS7000215"},
		{"certificate", func(*graphsim.Server) graphclient.CredentialConfig {
			return graphclient.CredentialConfig{Kind: graphclient.CredentialCertificate, CertificatePath: registered.Path}
		}, graphsim.GrantCertificate, ""},
		{"certificate with chain", func(*graphsim.Server) graphclient.CredentialConfig {
			return graphclient.CredentialConfig{Kind: graphclient.CredentialCertificate, CertificatePath: registered.Path, SendCertificateChain: true}
		}, graphsim.GrantCertificate, ""},
		{"wrong certificate", func(*graphsim.Server) graphclient.CredentialConfig {
			return graphclient.CredentialConfig{Kind: graphclient.CredentialCertificate, CertificatePath: stranger.Path}
		}, "", "AADSTS700027"},
		{"workload identity", func(*graphsim.Server) graphclient.CredentialConfig {
			return graphclient.CredentialConfig{Kind: graphclient.CredentialWorkload, FederatedTokenFile: issuer.TokenFile(t, graphsim.FederatedAudience)}
		}, graphsim.GrantFederated, ""},
		{"federated token of another issuer", func(*graphsim.Server) graphclient.CredentialConfig {
			return graphclient.CredentialConfig{Kind: graphclient.CredentialWorkload, FederatedTokenFile: otherIssuer.TokenFile(t, graphsim.FederatedAudience)}
		}, "", "AADSTS700211"},
		{"federated token for another audience", func(*graphsim.Server) graphclient.CredentialConfig {
			return graphclient.CredentialConfig{Kind: graphclient.CredentialWorkload, FederatedTokenFile: issuer.TokenFile(t, "api://elsewhere")}
		}, "", "AADSTS700212"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := testkit.StartSim(t, graphsim.Options{ClientCertificate: registered.Cert, FederatedIssuerKey: issuer.PublicKey()})
			cfg := tt.cfg(sim)
			cfg.TenantID, cfg.ClientID = sim.TenantID(), sim.ClientID()
			cfg.AuthorityHost, cfg.HTTPClient = sim.AuthorityURL(), sim.HTTPClient()
			cred, err := graphclient.NewCredential(cfg)
			if err != nil {
				t.Fatalf("NewCredential: %v", err)
			}
			tok, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{graphScope}})
			if tt.wantGrant == "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("GetToken error = %v, want one containing %s", err, tt.wantErr)
				}
				if got := sim.TokenGrants(); len(got) != 0 {
					t.Errorf("token grants = %v, want none issued", got)
				}
				return
			}
			if err != nil || tok.Token == "" {
				t.Fatalf("GetToken = %q, %v; want a token", tok.Token, err)
			}
			if got := sim.TokenGrants(); !slices.Equal(got, []string{tt.wantGrant}) {
				t.Errorf("token grants = %v, want [%s]", got, tt.wantGrant)
			}
		})
	}
}

// TestCredentialManagedIdentity asks the simulator for managed identity
// tokens the two ways a host offers them: the identity endpoint App Service
// (and Container Apps, Functions) announces in IDENTITY_ENDPOINT and
// IDENTITY_HEADER, and IMDS, which VMs, scale sets and AKS nodes answer at
// a fixed link-local address when no such endpoint is set. azidentity reads
// those variables from the process environment itself, so this test
// cannot run in parallel.
func TestCredentialManagedIdentity(t *testing.T) {
	sim := testkit.StartSim(t, graphsim.Options{})
	hosts := []struct {
		name     string
		endpoint string // IDENTITY_ENDPOINT; empty for IMDS
		client   *http.Client
		// resource differs per host: MSAL keeps managed identity tokens in
		// one cache per process, by identity and resource, so a second
		// host asking for the same would be answered from it.
		resource string
	}{
		{"app service endpoint", sim.ManagedIdentityEndpoint(), sim.HTTPClient(), "https://graph.microsoft.com"},
		{"imds", "", sim.IMDSHTTPClient(), "https://graph.microsoft.us"},
	}
	tests := []struct {
		name     string
		clientID string
		wantErr  string
	}{
		{"user-assigned", sim.ClientID(), ""},
		{"system-assigned", "", ""},
		{"identity the host does not have", "00000000-0000-0000-0000-00000000dead", "identity"},
	}
	for _, host := range hosts {
		t.Run(host.name, func(t *testing.T) {
			header := ""
			if host.endpoint != "" {
				header = sim.IdentityHeader()
			}
			for _, name := range []string{"IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"} {
				t.Setenv(name, "")
			}
			t.Setenv("IDENTITY_ENDPOINT", host.endpoint)
			t.Setenv("IDENTITY_HEADER", header)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					sim.Reset()
					cred, err := graphclient.NewCredential(graphclient.CredentialConfig{
						Kind: graphclient.CredentialManaged, ClientID: tt.clientID,
						AuthorityHost: sim.AuthorityURL(), HTTPClient: host.client,
					})
					if err != nil {
						t.Fatalf("NewCredential: %v", err)
					}
					tok, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{host.resource + "/.default"}})
					if tt.wantErr != "" {
						if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
							t.Fatalf("GetToken error = %v, want one containing %q", err, tt.wantErr)
						}
						return
					}
					if err != nil || tok.Token == "" {
						t.Fatalf("GetToken = %q, %v; want a token", tok.Token, err)
					}
					if got := sim.TokenGrants(); !slices.Equal(got, []string{graphsim.GrantManaged}) {
						t.Errorf("token grants = %v, want [%s]", got, graphsim.GrantManaged)
					}
					if got := sim.TokenScopes(); !slices.Equal(got, []string{host.resource}) {
						t.Errorf("managed identity resources = %v, want the scope's resource", got)
					}
				})
			}
		})
	}
}

func TestNewCredentialNamesMissingSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind string
		want string
	}{
		{graphclient.CredentialSecret, "AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET"},
		{graphclient.CredentialCertificate, "AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_CERTIFICATE_PATH"},
		{graphclient.CredentialWorkload, "AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE"},
		{"password", `unknown kind "password"`},
	}
	for _, tt := range tests {
		_, err := graphclient.NewCredential(graphclient.CredentialConfig{Kind: tt.kind})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewCredential(%s) error = %v, want one naming %s", tt.kind, err, tt.want)
		}
	}
}
