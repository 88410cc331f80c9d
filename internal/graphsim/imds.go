package graphsim

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// IMDSAddr is the host:port of Azure's Instance Metadata Service, where
// managed identity asks for tokens on a virtual machine, a scale set or an
// AKS node when the host sets no identity endpoint of its own. azidentity
// has it built in; it cannot be configured.
const IMDSAddr = "169.254.169.254:80"

// imdsPath is the IMDS token endpoint's path.
const imdsPath = "/metadata/identity/oauth2/token"

// servePlain routes the plain-HTTP listener: the IMDS token endpoint, and
// Graph for everything else.
func (s *Server) servePlain(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == imdsPath {
		s.serveIMDS(w, r)
		return
	}
	s.serveGraph(w, r)
}

// serveIMDS answers the IMDS managed identity protocol: GET
// ?api-version=V&resource=R[&client_id=C] with the header "Metadata: true",
// which IMDS requires so that a request forged through a server-side
// redirect (which cannot set headers) gets nothing. A client_id other than
// the sim's is an identity the host does not have, answered 400 as IMDS
// does.
func (s *Server) serveIMDS(w http.ResponseWriter, r *http.Request) {
	q, failStatus := s.managedIdentityRequest(r)
	switch {
	case failStatus != 0:
		writeTokenOutage(w, failStatus)
	case r.Method != http.MethodGet:
		writeOAuthError(w, http.StatusMethodNotAllowed, "invalid_request", "imds: only GET")
	case !strings.EqualFold(r.Header.Get("Metadata"), "true"):
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
	case q.Get("api-version") == "" || q.Get("resource") == "":
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "imds: api-version and resource are required")
	case q.Get("client_id") != "" && q.Get("client_id") != s.clientID:
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Identity not found")
	default:
		s.issueToken(w, GrantManaged, true)
	}
}

// IMDSHTTPClient returns a client that carries requests for IMDSAddr to
// this simulator's IMDS endpoint and every other request as usual: give it
// to a managed identity credential (its Transport) to test the IMDS path,
// which otherwise only a real Azure host can answer.
func (s *Server) IMDSHTTPClient() *http.Client {
	local := strings.TrimPrefix(s.graphURL, "http://")
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	transport := s.transport.Clone()
	transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == IMDSAddr {
			addr = local
		}
		conn, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, fmt.Errorf("graphsim imds dial %s: %w", addr, err)
		}
		return conn, nil
	}
	return &http.Client{Transport: transport}
}
