package graphsim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// newSelfSignedCert makes an in-memory CA-capable certificate for 127.0.0.1
// so that a pool holding just this cert verifies the authority.
func newSelfSignedCert() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generate tls key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generate tls serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "graphsim authority", Organization: []string{"graphsim"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("create tls certificate: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, certPEM, nil
}

// serveAuthority answers the few Entra endpoints MSAL uses for the client
// credentials flow:
//
//	GET  /{tenant}/v2.0/.well-known/openid-configuration
//	POST /{tenant}/oauth2/v2.0/token
//	GET  /{tenant}/discovery/v2.0/keys
//
// MSAL asks login.microsoftonline.com for instance discovery whatever the
// authority host, so clients must set DisableInstanceDiscovery.
func (s *Server) serveAuthority(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-ms-request-id", newGUID())
	if id := r.Header.Get("client-request-id"); id != "" {
		w.Header().Set("client-request-id", id)
	}
	if r.URL.Path == "/msi/token" {
		s.serveManagedIdentity(w, r)
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	rest := strings.Join(parts[1:], "/")
	tenant := parts[0]

	switch {
	case rest == "v2.0/.well-known/openid-configuration" && r.Method == http.MethodGet:
		if s.checkTenant(w, tenant) {
			s.serveOpenIDConfiguration(w)
		}
	case rest == "discovery/v2.0/keys" && r.Method == http.MethodGet:
		if s.checkTenant(w, tenant) {
			writeJSON(w, http.StatusOK, map[string]any{"keys": []any{}})
		}
	case rest == "oauth2/v2.0/token" && r.Method == http.MethodPost:
		s.serveToken(w, r, tenant)
	default:
		writeOAuthError(w, http.StatusNotFound, "invalid_request", "AADSTS90000: no such endpoint: "+r.Method+" "+r.URL.Path)
	}
}

// tenantURL is the authority URL for this sim's tenant, ending in "/".
func (s *Server) tenantURL() string {
	return s.authorityURL + s.tenantID + "/"
}

func (s *Server) checkTenant(w http.ResponseWriter, tenant string) bool {
	if strings.EqualFold(tenant, s.tenantID) {
		return true
	}
	writeOAuthError(w, http.StatusBadRequest, "invalid_tenant",
		fmt.Sprintf("AADSTS90002: Tenant '%s' not found. Check to make sure you have the correct tenant ID.", tenant))
	return false
}

func (s *Server) serveOpenIDConfiguration(w http.ResponseWriter) {
	base := s.tenantURL()
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                base + "v2.0",
		"authorization_endpoint":                base + "oauth2/v2.0/authorize",
		"token_endpoint":                        base + "oauth2/v2.0/token",
		"device_authorization_endpoint":         base + "oauth2/v2.0/devicecode",
		"end_session_endpoint":                  base + "oauth2/v2.0/logout",
		"jwks_uri":                              base + "discovery/v2.0/keys",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"request_uri_parameter_supported":       false,
		"tenant_region_scope":                   "WW",
		"cloud_instance_name":                   "graphsim",
	})
}

// serveToken implements the client credentials grant, with a shared
// secret or a JWT client assertion (a certificate's, or a federated token).
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, tenant string) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	parseErr := r.ParseForm()
	scope := r.PostForm.Get("scope")

	s.mu.Lock()
	s.tokenRequests++
	s.tokenScopes = append(s.tokenScopes, scope)
	failStatus := s.takeTokenFailure()
	s.mu.Unlock()

	if !s.checkTenant(w, tenant) {
		return
	}
	switch {
	case failStatus != 0:
		writeTokenOutage(w, failStatus)
		return
	case parseErr != nil:
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: cannot parse form body: "+parseErr.Error())
		return
	case r.PostForm.Get("grant_type") != "client_credentials":
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type",
			fmt.Sprintf("AADSTS70003: The app requested an unsupported grant type '%s'.", r.PostForm.Get("grant_type")))
		return
	case r.PostForm.Get("client_id") != s.clientID:
		writeOAuthError(w, http.StatusBadRequest, "unauthorized_client",
			fmt.Sprintf("AADSTS700016: Application with identifier '%s' was not found in the directory '%s'.", r.PostForm.Get("client_id"), s.tenantID))
		return
	}
	grant, ok := s.authenticateClient(w, r.PostForm)
	if !ok {
		return
	}
	switch {
	case scope == "":
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: The request body must contain the following parameter: 'scope'.")
	case !appOnlyScope(scope):
		writeOAuthError(w, http.StatusBadRequest, "invalid_scope",
			fmt.Sprintf("AADSTS1002012: The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", scope))
	default:
		s.issueToken(w, grant, false)
	}
}

// takeTokenFailure consumes one injected token failure, if any; s.mu is held.
func (s *Server) takeTokenFailure() int {
	if s.faults.tokenFailN <= 0 {
		return 0
	}
	s.faults.tokenFailN--
	return s.faults.tokenFailStatus
}

func writeTokenOutage(w http.ResponseWriter, status int) {
	writeOAuthError(w, status, "temporarily_unavailable",
		"AADSTS50000: There was an error issuing a token or an issue with our sign-in service. Trace the request with the correlation id.")
}

// authenticateClient checks the client's proof: client_secret, or a
// client_assertion of type jwt-bearer. It answers the refusal itself.
func (s *Server) authenticateClient(w http.ResponseWriter, form url.Values) (string, bool) {
	assertion := form.Get("client_assertion")
	if assertion == "" {
		if form.Get("client_secret") != s.clientSecret {
			writeOAuthError(w, http.StatusUnauthorized, "invalid_client",
				fmt.Sprintf("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", s.clientID))
			return "", false
		}
		return GrantSecret, true
	}
	if t := form.Get("client_assertion_type"); t != clientAssertionType {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request",
			fmt.Sprintf("AADSTS700010: client_assertion_type %q is not supported; use %s.", t, clientAssertionType))
		return "", false
	}
	if form.Get("client_secret") != "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "AADSTS90014: give a client_secret or a client_assertion, not both.")
		return "", false
	}
	grant, err := s.checkAssertion(assertion, s.clientID, time.Now())
	if err != nil {
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", err.Error())
		return "", false
	}
	return grant, true
}

// issueToken answers with a new access token; App Service's managed
// identity shape gives expires_on (Unix seconds, as text) instead of
// expires_in.
func (s *Server) issueToken(w http.ResponseWriter, grant string, managed bool) {
	token := "graphsim." + rand.Text()
	seconds := int(s.tokenLifetime / time.Second)
	expires := time.Now().Add(s.tokenLifetime)
	s.mu.Lock()
	s.tokens[token] = expires
	s.issued = append(s.issued, token)
	s.tokenGrants = append(s.tokenGrants, grant)
	s.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store, no-cache")
	answer := map[string]any{"token_type": "Bearer", "access_token": token}
	if managed {
		answer["expires_on"] = strconv.FormatInt(expires.Unix(), 10)
	} else {
		answer["expires_in"] = seconds
		answer["ext_expires_in"] = seconds
	}
	writeJSON(w, http.StatusOK, answer)
}

// serveManagedIdentity answers App Service's managed identity protocol:
// GET ?api-version=2019-08-01&resource=R[&client_id=C] with the
// X-IDENTITY-HEADER secret. A client_id other than the sim's is an
// identity the host does not have.
func (s *Server) serveManagedIdentity(w http.ResponseWriter, r *http.Request) {
	q, failStatus := s.managedIdentityRequest(r)
	switch {
	case failStatus != 0:
		writeTokenOutage(w, failStatus)
	case r.Method != http.MethodGet:
		writeOAuthError(w, http.StatusMethodNotAllowed, "invalid_request", "managed identity: only GET")
	case subtle.ConstantTimeCompare([]byte(r.Header.Get("X-IDENTITY-HEADER")), []byte(s.identityHeader)) != 1:
		writeOAuthError(w, http.StatusUnauthorized, "invalid_request", "managed identity: missing or wrong X-IDENTITY-HEADER")
	case q.Get("api-version") == "" || q.Get("resource") == "":
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "managed identity: api-version and resource are required")
	case q.Get("client_id") != "" && q.Get("client_id") != s.clientID:
		writeOAuthError(w, http.StatusBadRequest, "invalid_request",
			fmt.Sprintf("managed identity: no user-assigned identity with client id %q on this host", q.Get("client_id")))
	default:
		s.issueToken(w, GrantManaged, true)
	}
}

// managedIdentityRequest records a managed identity token request (either
// protocol) and returns its query and the injected failure it meets, if
// any (FailTokens).
func (s *Server) managedIdentityRequest(r *http.Request) (url.Values, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenRequests++
	q := r.URL.Query()
	s.tokenScopes = append(s.tokenScopes, q.Get("resource"))
	return q, s.takeTokenFailure()
}

// appOnlyScope reports whether scope is a single "<resource>/.default"; MSAL
// may add openid/profile/offline_access, which Entra tolerates.
func appOnlyScope(scope string) bool {
	found := false
	for _, sc := range strings.Fields(scope) {
		switch {
		case strings.HasSuffix(sc, "/.default"):
			found = true
		case sc == "openid" || sc == "profile" || sc == "offline_access":
		default:
			return false
		}
	}
	return found
}

func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]any{
		"error":             code,
		"error_description": description,
		"timestamp":         time.Now().UTC().Format("2006-01-02 15:04:05Z"),
		"trace_id":          newGUID(),
		"correlation_id":    newGUID(),
	})
}

// writeJSON answers the authority's requests.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	if _, err := w.Write(b); err != nil {
		// The client hung up; it sees the failure itself and there is no
		// one else to tell.
		return
	}
}
