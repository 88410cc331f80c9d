package testkit

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ClientCertificate is an app registration's certificate as a test holds
// it: the parsed certificate for graphsim.Options.ClientCertificate, and
// Path, a PEM file with certificate and private key for
// AZURE_CLIENT_CERTIFICATE_PATH.
type ClientCertificate struct {
	Cert *x509.Certificate
	Path string
}

// NewClientCertificate makes a self-signed RSA certificate (Entra takes
// RSA keys for client assertions) and writes it with its key to a PEM file
// in t.TempDir().
func NewClientCertificate(t testing.TB, name string) ClientCertificate {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generate certificate key: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshal certificate key: %v", err)
	}
	data := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	path := filepath.Join(t.TempDir(), name+".pem")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("write certificate: %v", err)
	}
	return ClientCertificate{Cert: cert, Path: path}
}

// FederatedIssuer stands for the identity provider of workload identity
// (an AKS cluster's service account issuer): it signs the tokens the
// kubelet would project into AZURE_FEDERATED_TOKEN_FILE.
type FederatedIssuer struct {
	key *rsa.PrivateKey
}

// NewFederatedIssuer makes an issuer with a fresh RSA key.
func NewFederatedIssuer(t testing.TB) *FederatedIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generate issuer key: %v", err)
	}
	return &FederatedIssuer{key: key}
}

// PublicKey is the key to configure as graphsim.Options.FederatedIssuerKey.
func (f *FederatedIssuer) PublicKey() *rsa.PublicKey { return &f.key.PublicKey }

// TokenFile writes an RS256 token for audience, valid for an hour, to a
// file in t.TempDir() and returns its path.
func (f *FederatedIssuer) TokenFile(t testing.TB, audience string) string {
	t.Helper()
	now := time.Now()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("marshal token part: %v", err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "testkit"}) + "." + enc(map[string]any{
		"iss": "https://oidc.testkit.invalid/",
		"sub": "system:serviceaccount:sitefollow:sitefollow",
		"aud": []string{audience},
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	})
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, f.key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatalf("sign token: %v", err)
	}
	path := filepath.Join(t.TempDir(), "azure-identity-token")
	if err := os.WriteFile(path, []byte(input+"."+base64.RawURLEncoding.EncodeToString(sig)), 0o600); err != nil {
		t.Fatalf("write token file: %v", err)
	}
	return path
}
