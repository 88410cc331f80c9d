package graphsim

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha1" // x5t is a SHA-1 thumbprint by definition (RFC 7515 §4.1.7)
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Grant kinds the token endpoint records (see Server.TokenGrants).
const (
	GrantSecret      = "secret"
	GrantCertificate = "certificate"
	GrantFederated   = "federated"
	GrantManaged     = "managed"
)

// clientAssertionType is the only client_assertion_type Entra accepts.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// FederatedAudience is the audience Entra requires of a federated token
// (workload identity's token file).
const FederatedAudience = "api://AzureADTokenExchange"

// clockSkew is how far exp and nbf may miss, as Entra allows.
const clockSkew = 5 * time.Minute

// jwtHeader is the part of a JWT header the endpoint looks at.
type jwtHeader struct {
	Alg       string `json:"alg"`
	X5t       string `json:"x5t"`
	X5tS256   string `json:"x5t#S256"`
	KeyID     string `json:"kid"`
	TokenType string `json:"typ"`
}

// jwtClaims are the registered claims the endpoint checks.
type jwtClaims struct {
	Audience audience `json:"aud"`
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"`
	Expiry   int64    `json:"exp"`
	NotBef   int64    `json:"nbf"`
}

// audience is "aud", a string or an array of strings (RFC 7519 §4.1.3).
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("aud: %w", err)
	}
	*a = many
	return nil
}

func (a audience) has(want string) bool {
	for _, v := range a {
		if v == want {
			return true
		}
	}
	return false
}

// parsedJWT is a compact JWS split and decoded, not yet verified.
type parsedJWT struct {
	header       jwtHeader
	claims       jwtClaims
	signingInput string
	signature    []byte
}

func parseJWT(token string) (parsedJWT, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return parsedJWT{}, errors.New("not a compact JWS")
	}
	var p parsedJWT
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return parsedJWT{}, fmt.Errorf("header: %w", err)
	}
	if err := json.Unmarshal(hb, &p.header); err != nil {
		return parsedJWT{}, fmt.Errorf("header: %w", err)
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return parsedJWT{}, fmt.Errorf("claims: %w", err)
	}
	if err := json.Unmarshal(cb, &p.claims); err != nil {
		return parsedJWT{}, fmt.Errorf("claims: %w", err)
	}
	if p.signature, err = base64.RawURLEncoding.DecodeString(parts[2]); err != nil {
		return parsedJWT{}, fmt.Errorf("signature: %w", err)
	}
	p.signingInput = parts[0] + "." + parts[1]
	return p, nil
}

// verify checks the signature with key, for the RS256 and PS256 that MSAL
// and Kubernetes' service account issuer use.
func (p parsedJWT) verify(key *rsa.PublicKey) error {
	sum := sha256.Sum256([]byte(p.signingInput))
	switch p.header.Alg {
	case "RS256":
		return rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], p.signature)
	case "PS256":
		return rsa.VerifyPSS(key, crypto.SHA256, sum[:], p.signature, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	}
	return fmt.Errorf("unsupported alg %q", p.header.Alg)
}

// timely checks exp and nbf against now.
func (p parsedJWT) timely(now time.Time) error {
	if p.claims.Expiry == 0 || now.After(time.Unix(p.claims.Expiry, 0).Add(clockSkew)) {
		return errors.New("expired")
	}
	if p.claims.NotBef != 0 && now.Add(clockSkew).Before(time.Unix(p.claims.NotBef, 0)) {
		return errors.New("not yet valid")
	}
	return nil
}

// thumbprintMatches compares the header's thumbprint of cert, which MSAL
// sends in standard base64 and RFC 7515 in base64url.
func thumbprintMatches(h jwtHeader, cert *x509.Certificate) bool {
	var got string
	var want []byte
	switch {
	case h.X5tS256 != "":
		s := sha256.Sum256(cert.Raw)
		got, want = h.X5tS256, s[:]
	case h.X5t != "":
		s := sha1.Sum(cert.Raw)
		got, want = h.X5t, s[:]
	default:
		return false
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(got); err == nil && subtle.ConstantTimeCompare(b, want) == 1 {
			return true
		}
	}
	return false
}

// checkAssertion judges a client_assertion: a certificate assertion (it
// names a certificate thumbprint) signed by the configured certificate's key
// for this token endpoint, or else a federated token signed by the
// configured issuer key for FederatedAudience. It returns the grant kind,
// or an AADSTS description of the refusal.
func (s *Server) checkAssertion(assertion, clientID string, now time.Time) (string, error) {
	p, err := parseJWT(assertion)
	if err != nil {
		return "", fmt.Errorf("AADSTS50027: JWT token is invalid or malformed: %w", err)
	}
	if p.header.X5t != "" || p.header.X5tS256 != "" {
		return GrantCertificate, s.checkCertificateAssertion(p, clientID, now)
	}
	return GrantFederated, s.checkFederatedToken(p, now)
}

func (s *Server) checkCertificateAssertion(p parsedJWT, clientID string, now time.Time) error {
	cert := s.clientCert
	if cert == nil {
		return errors.New("AADSTS700027: Client assertion contains an invalid signature: no certificate is registered for the app")
	}
	key, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok || !thumbprintMatches(p.header, cert) {
		return errors.New("AADSTS700027: Client assertion failed signature validation: the key was not found (thumbprint of a certificate the app does not have)")
	}
	if err := p.verify(key); err != nil {
		return fmt.Errorf("AADSTS700027: Client assertion failed signature validation: %w", err)
	}
	endpoint := s.tenantURL() + "oauth2/v2.0/token"
	switch {
	case !p.claims.Audience.has(endpoint):
		return fmt.Errorf("AADSTS700016: client assertion audience %q is not the token endpoint %s", strings.Join(p.claims.Audience, " "), endpoint)
	case p.claims.Issuer != clientID || p.claims.Subject != clientID:
		return fmt.Errorf("AADSTS700021: client assertion iss %q and sub %q must both be the client id %q", p.claims.Issuer, p.claims.Subject, clientID)
	}
	if err := p.timely(now); err != nil {
		return fmt.Errorf("AADSTS700024: client assertion is not within its valid time range: %w", err)
	}
	return nil
}

func (s *Server) checkFederatedToken(p parsedJWT, now time.Time) error {
	if s.federatedKey == nil {
		return errors.New("AADSTS70021: No matching federated identity record found for presented assertion: no federated credential is registered for the app")
	}
	if err := p.verify(s.federatedKey); err != nil {
		return fmt.Errorf("AADSTS700211: federated token failed signature validation against the issuer's key: %w", err)
	}
	if !p.claims.Audience.has(FederatedAudience) {
		return fmt.Errorf("AADSTS700212: No matching federated identity record found for presented assertion audience %q; want %s", strings.Join(p.claims.Audience, " "), FederatedAudience)
	}
	if err := p.timely(now); err != nil {
		return fmt.Errorf("AADSTS700024: federated token is not within its valid time range: %w", err)
	}
	return nil
}
