// Package graphsim is a Microsoft Graph simulator for the followedSites
// add/remove calls and the Entra token endpoint, served over real HTTP on
// loopback. Tests, the demo and benchmarks point real clients (azidentity
// included) at it, inject faults (throttling, outages, per-site failures,
// omitted answers) and then inspect what arrived and what state resulted.
package graphsim

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Default credentials and token lifetime used when Options leaves them empty.
const (
	DefaultTenantID      = "sim-tenant"
	DefaultClientID      = "sim-client"
	DefaultClientSecret  = "sim-secret"
	DefaultTokenLifetime = time.Hour
	// DefaultIdentityHeader is the secret the managed identity endpoint
	// wants in X-IDENTITY-HEADER (IDENTITY_HEADER on App Service).
	DefaultIdentityHeader = "sim-identity-header"
)

// maxBodyBytes bounds request bodies; real Graph payloads here are tiny.
const maxBodyBytes = 1 << 20

// Options configures a Server. Zero values are sane.
type Options struct {
	// Sites are the known site ids ("host,guid,guid"), matched
	// case-insensitively. Unknown sites fail per site with a 207 invalidRequest.
	Sites []string
	// AllowAnySite makes every well-formed site id known (benchmarks).
	AllowAnySite bool
	// SiteURLs maps site URLs (https://host/path, the path as given or
	// escaped; hostname case-insensitive, a trailing "/" ignored) to the
	// site ids GET /v1.0/sites/{hostname}:/{path} answers with; those sites
	// are known too. Any other URL is answered 404 itemNotFound.
	SiteURLs map[string]string
	// PoisonSites are ids (matched case-insensitively, like Sites) that
	// Graph cannot parse: any call naming one of them is refused whole with
	// 400 invalidRequest, the good sites beside it included, and changes
	// nothing. It is judged with the body, before any throttling.
	PoisonSites []string
	// Latency is added to every Graph call (not token calls).
	Latency time.Duration
	// RateLimit, if > 0, is a token bucket of RateLimit requests per second
	// for Graph calls; calls beyond it get 429 with a Retry-After.
	RateLimit float64
	// Burst is the bucket size (default 1 when RateLimit > 0).
	Burst int
	// Budget, if its Shape is set, is the app's Graph budget in one of
	// several shapes (see Budget); it replaces RateLimit, and New refuses
	// both at once.
	Budget Budget
	// TenantID, ClientID and ClientSecret are the credentials the token
	// endpoint accepts; defaults DefaultTenantID, DefaultClientID and
	// DefaultClientSecret.
	TenantID, ClientID, ClientSecret string
	// ClientCertificate, when set, is the app's certificate: the token
	// endpoint accepts client assertions signed by its (RSA) key.
	ClientCertificate *x509.Certificate
	// FederatedIssuerKey, when set, is the public key of the identity
	// provider trusted for federated credentials (workload identity's
	// service account issuer): the token endpoint accepts, as the client
	// assertion, tokens it signed for FederatedAudience.
	FederatedIssuerKey *rsa.PublicKey
	// IdentityHeader is the secret the managed identity endpoint (see
	// ManagedIdentityEndpoint) requires; default DefaultIdentityHeader.
	IdentityHeader string
	// TokenLifetime is how long issued tokens stay valid (default 1h).
	TokenLifetime time.Duration
	// GraphAddr and AuthorityAddr are the loopback host:port the Graph and
	// authority listeners bind, for a simulator people point tools at by
	// hand (consumer sim); default "127.0.0.1:0", an ephemeral port. A
	// host that is not a loopback address is refused: the sim accepts one
	// fixed secret and Graph is served over plain HTTP.
	GraphAddr, AuthorityAddr string
}

// Server is a running simulator: a plain-HTTP Graph listener and a TLS
// authority listener, both on 127.0.0.1.
type Server struct {
	tenantID, clientID, clientSecret string
	clientCert                       *x509.Certificate
	federatedKey                     *rsa.PublicKey
	identityHeader                   string
	tokenLifetime                    time.Duration
	allowAnySite                     bool
	limiter                          *rate.Limiter // nil without RateLimit
	budget                           *budgetState  // nil without Budget; guarded by mu

	// poison holds the canonical keys of Options.PoisonSites; read-only
	// after New.
	poison map[string]bool

	graphServer, authServer *http.Server
	graphURL, authorityURL  string
	certPEM                 []byte
	transport               *http.Transport
	client                  *http.Client

	// bufs holds *bytes.Buffer for request and answer bodies.
	bufs sync.Pool

	// done is closed by Close so that latency sleeps end at once.
	done      chan struct{}
	closeOnce sync.Once
	serving   sync.WaitGroup // the two Serve loops

	mu       sync.Mutex
	closed   bool
	err      error          // first listener or teardown failure, for Err
	handlers sync.WaitGroup // in-flight handlers; Add only while !closed under mu
	active   int            // in-flight handlers, observable by tests

	sites    map[string]bool            // canonical site id → known
	siteURLs map[string]string          // siteURLKey → site id
	ids      map[string]*siteInfo       // raw site id → what it parses to; bounded by maxCachedIDs
	followed map[string]map[string]bool // lower-case user → canonical site ids

	calls         []*Call
	httpRequests  int
	earlyCalls    int
	tokenRequests int
	tokenScopes   []string
	tokenGrants   []string
	tokens        map[string]time.Time // access token → expiry
	issued        []string             // every access token issued, revoked or not
	deadline      time.Time            // app-wide Retry-After deadline announced so far
	latency       time.Duration
	opLatency     map[string]time.Duration
	faults        faults
	chaos         Chaos
	chaosRand     *rand.Rand // nil while chaos is off
	effects       []Effect
}

// New starts a Server on 127.0.0.1 with ephemeral ports: Graph over plain
// HTTP, the authority over TLS with a freshly generated self-signed cert.
func New(opts Options) (*Server, error) {
	s := &Server{
		tenantID:       orDefault(opts.TenantID, DefaultTenantID),
		clientID:       orDefault(opts.ClientID, DefaultClientID),
		clientSecret:   orDefault(opts.ClientSecret, DefaultClientSecret),
		clientCert:     opts.ClientCertificate,
		federatedKey:   opts.FederatedIssuerKey,
		identityHeader: orDefault(opts.IdentityHeader, DefaultIdentityHeader),
		tokenLifetime:  opts.TokenLifetime,
		allowAnySite:   opts.AllowAnySite,
		latency:        opts.Latency,
		opLatency:      make(map[string]time.Duration),
		done:           make(chan struct{}),
		sites:          make(map[string]bool),
		siteURLs:       make(map[string]string),
		ids:            make(map[string]*siteInfo),
		followed:       make(map[string]map[string]bool),
		tokens:         make(map[string]time.Time),
		faults:         newFaults(),
	}
	if s.tokenLifetime <= 0 {
		s.tokenLifetime = DefaultTokenLifetime
	}
	for _, id := range opts.Sites {
		site, err := parseSiteID(id)
		if err != nil {
			return nil, fmt.Errorf("graphsim new: option Sites: %w", err)
		}
		s.sites[site.key()] = true
	}
	for raw, id := range opts.SiteURLs {
		key, err := parseSiteURL(raw)
		if err != nil {
			return nil, fmt.Errorf("graphsim new: option SiteURLs: %w", err)
		}
		site, err := parseSiteID(id)
		if err != nil {
			return nil, fmt.Errorf("graphsim new: option SiteURLs: %w", err)
		}
		s.siteURLs[key] = id
		s.sites[site.key()] = true
	}
	if len(opts.PoisonSites) > 0 {
		s.poison = make(map[string]bool, len(opts.PoisonSites))
		for _, id := range opts.PoisonSites {
			s.poison[lookupKey(id)] = true
		}
	}
	if err := opts.Budget.validate(); err != nil {
		return nil, fmt.Errorf("graphsim new: option Budget: %w", err)
	}
	if opts.Budget.Shape != 0 {
		if opts.RateLimit > 0 {
			return nil, errors.New("graphsim new: options RateLimit and Budget: give one budget, not two")
		}
		s.budget = newBudgetState(opts.Budget, time.Now())
	}
	if opts.RateLimit > 0 {
		burst := opts.Burst
		if burst <= 0 {
			burst = 1
		}
		s.limiter = rate.NewLimiter(rate.Limit(opts.RateLimit), burst)
	}

	cert, certPEM, err := newSelfSignedCert()
	if err != nil {
		return nil, fmt.Errorf("graphsim new: %w", err)
	}
	s.certPEM = certPEM
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		return nil, errors.New("graphsim new: cannot add generated certificate to pool")
	}
	s.transport = &http.Transport{
		Proxy:               nil, // loopback only; never route through an environment proxy
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}
	s.client = &http.Client{Transport: s.transport}

	graphAddr, err := loopbackAddr(opts.GraphAddr)
	if err != nil {
		return nil, fmt.Errorf("graphsim new: option GraphAddr: %w", err)
	}
	authAddr, err := loopbackAddr(opts.AuthorityAddr)
	if err != nil {
		return nil, fmt.Errorf("graphsim new: option AuthorityAddr: %w", err)
	}
	graphLn, err := net.Listen("tcp", graphAddr)
	if err != nil {
		return nil, fmt.Errorf("graphsim new: listen graph: %w", err)
	}
	authLn, err := net.Listen("tcp", authAddr)
	if err != nil {
		if cerr := graphLn.Close(); cerr != nil {
			return nil, fmt.Errorf("graphsim new: listen authority: %w (closing graph listener: %v)", err, cerr)
		}
		return nil, fmt.Errorf("graphsim new: listen authority: %w", err)
	}
	s.graphURL = "http://" + graphLn.Addr().String()
	s.authorityURL = "https://" + authLn.Addr().String() + "/"

	s.graphServer = &http.Server{
		Handler:           s.track(http.HandlerFunc(s.servePlain)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          quietLog(),
	}
	s.authServer = &http.Server{
		Handler:           s.track(http.HandlerFunc(s.serveAuthority)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          quietLog(),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	tlsLn := tls.NewListener(authLn, s.authServer.TLSConfig)

	s.serving.Go(func() { s.serve(s.graphServer, graphLn) })
	s.serving.Go(func() { s.serve(s.authServer, tlsLn) })
	return s, nil
}

// serve runs one listener until Close; ErrServerClosed is the normal exit.
func (s *Server) serve(srv *http.Server, ln net.Listener) {
	err := srv.Serve(ln)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.fail(fmt.Errorf("graphsim serve: %w", err))
		// The listener died under us: make in-flight sleeps end rather than hang.
		s.closeOnce.Do(func() { close(s.done) })
	}
}

// fail remembers the first infrastructure error for Err.
func (s *Server) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// Err reports the first listener failure or teardown error, if any. Tests
// may check it after Close; a healthy run returns nil.
func (s *Server) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// track counts in-flight handlers so that Close can wait for them, and
// refuses work once closing has begun.
func (s *Server) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		s.handlers.Add(1)
		s.active++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.active--
			s.mu.Unlock()
			s.handlers.Done()
		}()
		h.ServeHTTP(w, r)
	})
}

// Close stops both listeners, aborts latency sleeps, and waits for in-flight
// handlers. It is safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return
	}
	s.closeOnce.Do(func() { close(s.done) })
	// Close, not Shutdown: callers want prompt teardown, and every in-flight
	// handler watches s.done.
	if err := s.graphServer.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		s.fail(fmt.Errorf("graphsim close graph listener: %w", err))
	}
	if err := s.authServer.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		s.fail(fmt.Errorf("graphsim close authority listener: %w", err))
	}
	s.serving.Wait()
	s.handlers.Wait()
	s.transport.CloseIdleConnections()
}

// GraphURL is the Graph base URL, "http://127.0.0.1:PORT"; clients append
// "/v1.0/users/...".
func (s *Server) GraphURL() string { return s.graphURL }

// AuthorityURL is the Entra-like authority host, "https://127.0.0.1:PORT/",
// for cloud.Configuration.ActiveDirectoryAuthorityHost.
func (s *Server) AuthorityURL() string { return s.authorityURL }

// CertPEM is the PEM of the authority's self-signed TLS certificate.
func (s *Server) CertPEM() []byte { return append([]byte(nil), s.certPEM...) }

// HTTPClient is an HTTP client that trusts the authority's certificate, for
// azcore.ClientOptions.Transport; it works for the Graph listener too.
func (s *Server) HTTPClient() *http.Client { return s.client }

// TenantID is the tenant the authority accepts.
func (s *Server) TenantID() string { return s.tenantID }

// ClientID is the client id the token endpoint accepts.
func (s *Server) ClientID() string { return s.clientID }

// ClientSecret is the client secret the token endpoint accepts.
func (s *Server) ClientSecret() string { return s.clientSecret }

// ManagedIdentityEndpoint is the simulated managed identity endpoint, in
// App Service's shape, for IDENTITY_ENDPOINT; azidentity's managed identity
// credential asks it when IDENTITY_ENDPOINT and IDENTITY_HEADER are set.
func (s *Server) ManagedIdentityEndpoint() string { return s.authorityURL + "msi/token" }

// IdentityHeader is the secret the managed identity endpoint requires, for
// IDENTITY_HEADER.
func (s *Server) IdentityHeader() string { return s.identityHeader }

// pause waits d unless the request is cancelled or the server closes first.
func (s *Server) pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("graphsim latency: %w", ctx.Err())
	case <-s.done:
		return errors.New("graphsim latency: server closed")
	}
}

// quietLog silences net/http's connection-level chatter (TLS handshakes
// refused by untrusting clients, clients hanging up): tests provoke these on
// purpose and the outcome is visible to the client anyway.
func quietLog() *log.Logger {
	return log.New(io.Discard, "", 0)
}

// loopbackAddr returns addr, or the default "127.0.0.1:0" when it is
// empty, after checking that it is host:port with a loopback host.
func loopbackAddr(addr string) (string, error) {
	if addr == "" {
		return "127.0.0.1:0", nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%q: %w", addr, err)
	}
	if host == "localhost" {
		return addr, nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("%q: must be a loopback address such as 127.0.0.1:8443", addr)
	}
	return addr, nil
}

func orDefault(v, def string) string {
	if strings.TrimSpace(v) == "" {
		return def
	}
	return v
}
