package graphsim

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// waitFor polls cond with a generous deadline instead of sleeping blindly.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *Server) activeHandlers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

func TestCloseAbortsLatency(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}, Latency: time.Hour})
	tok := fetchToken(t, s)
	req, err := http.NewRequest(http.MethodPost, s.GraphURL()+"/v1.0/users/u1/followedSites/add", strings.NewReader(idsBody(t, siteA)))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	done := make(chan error, 1)
	go func() {
		resp, err := s.HTTPClient().Do(req)
		if err == nil {
			err = resp.Body.Close()
		}
		done <- err
	}()
	waitFor(t, "the call to arrive", func() bool { return s.CallCount() == 1 })
	s.Close() // would hang for an hour if the sleep ignored Close
	<-done
	if got := s.Calls()[0].Status; got != 0 {
		t.Errorf("Status of aborted call: got %d, want 0", got)
	}
	if got := s.activeHandlers(); got != 0 {
		t.Errorf("active handlers after Close: got %d, want 0", got)
	}
}

func TestCancelAbortsLatency(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}})
	s.SetLatency(time.Hour)
	tok := fetchToken(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.GraphURL()+"/v1.0/users/u1/followedSites/add", strings.NewReader(idsBody(t, siteA)))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	done := make(chan error, 1)
	go func() {
		resp, err := s.HTTPClient().Do(req)
		if err == nil {
			err = resp.Body.Close()
		}
		done <- err
	}()
	waitFor(t, "the call to arrive", func() bool { return s.CallCount() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("client error: got %v, want context.Canceled", err)
	}
	waitFor(t, "the handler to give up", func() bool { return s.activeHandlers() == 0 })
	if len(s.Followed("u1")) != 0 {
		t.Errorf("Followed: got %q, want none for an abandoned call", s.Followed("u1"))
	}
}

func TestReset(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}})
	s.Throttle(1, "30")
	c := call{op: "add", user: "u1", ids: []string{siteA}, token: fetchToken(t, s)}
	c.do(t, s)
	c.do(t, s)
	if s.CallCount() != 2 || s.EarlyCalls() != 1 || s.TokenRequests() != 1 {
		t.Fatalf("before Reset: got calls %d early %d tokens %d, want 2 1 1", s.CallCount(), s.EarlyCalls(), s.TokenRequests())
	}
	s.Reset()
	if s.CallCount() != 0 || s.EarlyCalls() != 0 || s.TokenRequests() != 0 || len(s.Calls()) != 0 {
		t.Errorf("after Reset: got calls %d early %d tokens %d, want zeros", s.CallCount(), s.EarlyCalls(), s.TokenRequests())
	}
	if f := s.Followed("u1"); !slices.Equal(f, []string{siteA}) {
		t.Errorf("Followed after Reset: got %q, want %q", f, siteA)
	}
}

func TestState(t *testing.T) {
	s := newSim(t, Options{})
	s.SetFollowed("Bob", strings.ToUpper(siteA), siteB)
	s.SetFollowed("alice", siteA)
	s.SetFollowed("carol", siteA)
	s.SetFollowed("CAROL")
	if got, want := s.Users(), []string{"alice", "bob"}; !slices.Equal(got, want) {
		t.Errorf("Users: got %q, want %q", got, want)
	}
	if got, want := s.Followed("bOB"), []string{siteB, siteA}; !slices.Equal(got, want) {
		t.Errorf("Followed: got %q, want %q", got, want)
	}
	if got := s.Followed("nobody"); len(got) != 0 {
		t.Errorf("Followed(nobody): got %q, want none", got)
	}
}

func TestAddSites(t *testing.T) {
	s := newSim(t, Options{})
	tok := fetchToken(t, s)
	c := call{op: "add", user: "u1", ids: []string{siteA}, token: tok}
	if got := c.do(t, s); got.status != http.StatusMultiStatus {
		t.Fatalf("before AddSites: got %d, want 207", got.status)
	}
	s.AddSites(strings.ToUpper(siteA))
	if got := c.do(t, s); got.status != http.StatusOK {
		t.Errorf("after AddSites: got %d, want 200", got.status)
	}
}

func TestNewOptions(t *testing.T) {
	if _, err := New(Options{Sites: []string{"not,a,site"}}); !errors.Is(err, errSiteID) {
		t.Errorf("New with malformed site: got %v, want errSiteID", err)
	}
	s := newSim(t, Options{})
	if s.TenantID() != DefaultTenantID || s.ClientID() != DefaultClientID || s.ClientSecret() != DefaultClientSecret {
		t.Errorf("defaults: got %q %q %q", s.TenantID(), s.ClientID(), s.ClientSecret())
	}
	if !strings.HasPrefix(s.GraphURL(), "http://127.0.0.1:") || !strings.HasPrefix(s.AuthorityURL(), "https://127.0.0.1:") || !strings.HasSuffix(s.AuthorityURL(), "/") {
		t.Errorf("URLs: got %q and %q", s.GraphURL(), s.AuthorityURL())
	}
}

func TestCertPEM(t *testing.T) {
	s := newSim(t, Options{})
	block, _ := pem.Decode(s.CertPEM())
	if block == nil {
		t.Fatal("CertPEM: no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("parse cert: %v", err)
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("VerifyHostname: %v", err)
	}
	// An HTTP client that does not trust the cert must fail: the authority is
	// real TLS.
	untrusting := &http.Client{Transport: &http.Transport{}}
	defer untrusting.CloseIdleConnections()
	if resp, err := untrusting.Get(s.AuthorityURL()); err == nil {
		closeBody(t, resp)
		t.Error("untrusting client: got a response, want a TLS error")
	}
}
