package config

import (
	"fmt"
)

// The values of SITEFOLLOW_CREDENTIAL.
const (
	CredentialAuto        = "auto"
	CredentialSecret      = "secret"
	CredentialCertificate = "certificate"
	CredentialWorkload    = "workload"
	CredentialManaged     = "managed"
)

// CredentialKind is the credential the consumer uses: the forced kind, or
// for auto the first the standard environment provides: a client secret,
// else a client certificate, else a federated token file (as AKS workload
// identity injects it), else managed identity.
func (c Config) CredentialKind() string {
	if c.Credential != "" && c.Credential != CredentialAuto {
		return c.Credential
	}
	switch {
	case c.ClientSecret != "":
		return CredentialSecret
	case c.ClientCertificatePath != "":
		return CredentialCertificate
	case c.FederatedTokenFile != "":
		return CredentialWorkload
	}
	return CredentialManaged
}

// credentialRelations require what the chosen kind needs, naming the kind,
// so that a forced kind missing its input stops start-up rather than
// failing at the first token.
func credentialRelations() []relation {
	needs := func(key, kind string, missing func(c *Config) bool) relation {
		return relation{key, func(c *Config, name func(string) string) error {
			if c.CredentialKind() == kind && missing(c) {
				return fmt.Errorf("is required with %s %s", name("credential"), kind)
			}
			return nil
		}}
	}
	// Managed identity needs neither: the host knows its tenant, and
	// without a client ID it is the system-assigned identity.
	app := func(key, where string, missing func(c *Config) bool) relation {
		return relation{key, func(c *Config, name func(string) string) error {
			if c.CredentialKind() != CredentialManaged && missing(c) {
				return fmt.Errorf("is required unless %s is %s; set %s", name("credential"), CredentialManaged, where)
			}
			return nil
		}}
	}
	return []relation{
		app("tenant-id", "--tenant-id or AZURE_TENANT_ID", func(c *Config) bool { return c.TenantID == "" }),
		app("client-id", "--client-id or AZURE_CLIENT_ID", func(c *Config) bool { return c.ClientID == "" }),
		needs("azure-client-secret", CredentialSecret, func(c *Config) bool { return c.ClientSecret == "" }),
		needs("azure-client-certificate-path", CredentialCertificate, func(c *Config) bool { return c.ClientCertificatePath == "" }),
		needs("azure-federated-token-file", CredentialWorkload, func(c *Config) bool { return c.FederatedTokenFile == "" }),
	}
}
