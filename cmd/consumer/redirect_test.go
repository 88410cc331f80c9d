package main

import (
	"bytes"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// redirector answers every request it is sent with a redirect to the same
// path on target, cycling through the redirect statuses, and counts what it
// answered. Serve (optional) answers a request itself instead.
type redirector struct {
	target string // scheme://host:port, no trailing slash
	serve  func(w http.ResponseWriter, r *http.Request) bool

	mu         sync.Mutex
	redirected int
}

func (d *redirector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d.serve != nil && d.serve(w, r) {
		return
	}
	d.mu.Lock()
	status := []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusMovedPermanently, http.StatusFound}[d.redirected%4]
	d.redirected++
	d.mu.Unlock()
	http.Redirect(w, r, d.target+r.URL.RequestURI(), status)
}

func (d *redirector) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.redirected
}

// TestRedirectsNotFollowed runs serve as `consumer run` wires it, with Graph
// or the authority answering every call with a redirect to the simulator
// on another port: no bearer token and no client secret may arrive there,
// and nothing a redirect target answers may count as applied.
func TestRedirectsNotFollowed(t *testing.T) {
	t.Run("graph", func(t *testing.T) {
		t.Parallel()
		ns := testkit.StartNATS(t, testkit.NATSOptions{})
		sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}})
		redir := &redirector{target: sim.GraphURL()}
		front := httptest.NewServer(redir)
		t.Cleanup(front.Close)
		settings := simSettings(t, ns.URL(), sim)
		settings["SITEFOLLOW_GRAPH_URL"] = front.URL
		settings["SITEFOLLOW_GRAPH_MAX_ATTEMPTS"] = "4"
		serveInProcess(t, settings, true)

		_, js := testkit.Connect(t, ns.URL())
		testkit.Publish(t, js, "ann@contoso.com", event.Follow, testSite(1))
		// Every status of the cycle once, and the answer to the last one
		// handled: a followed redirect reaches the simulator before the
		// client's next attempt reaches the redirector.
		testkit.Eventually(t, 2*time.Minute, "five redirected Graph calls or the request settled", func() bool {
			return redir.count() >= 5 || testkit.StreamMsgs(js, testkit.RequestStream) == 0
		})
		if n := sim.CallCount(); n != 0 {
			t.Errorf("calls reaching the redirect target: got %d, want 0", n)
		}
		if got := sim.Followed("ann@contoso.com"); len(got) != 0 {
			t.Errorf("followed at the redirect target: got %v, want none", got)
		}
		if n := testkit.StreamMsgs(js, testkit.RequestStream); n != 1 {
			t.Errorf("requests left in the stream: got %d, want 1 (a redirect is not applied)", n)
		}
	})
	t.Run("authority", func(t *testing.T) {
		t.Parallel()
		ns := testkit.StartNATS(t, testkit.NATSOptions{})
		sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}})
		redir := &redirector{target: strings.TrimSuffix(sim.AuthorityURL(), "/")}
		front := httptest.NewUnstartedServer(redir)
		front.StartTLS()
		t.Cleanup(front.Close)
		// The authority's metadata is the simulator's, naming the front as
		// the authority, so that the token request goes to the front, which
		// redirects it to the simulator's token endpoint.
		redir.serve = func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodGet {
				return false
			}
			resp, err := sim.HTTPClient().Get(redir.target + r.URL.RequestURI())
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return true
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return true
			}
			w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(bytes.ReplaceAll(body, []byte(redir.target), []byte(front.URL)))
			return true
		}
		frontCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw})
		settings := simSettings(t, ns.URL(), sim, frontCA)
		settings["AZURE_AUTHORITY_HOST"] = front.URL + "/"
		p := serveInProcess(t, settings, false)

		// Start-up asks for a token once; every probe may ask again.
		testkit.Eventually(t, 2*time.Minute, "two redirected token requests or one arriving at the target", func() bool {
			get(t, p.base+"/readyz")
			return redir.count() >= 2 || sim.TokenRequests() > 0
		})
		if n := sim.TokenRequests(); n != 0 {
			t.Errorf("token requests reaching the redirect target (with the client secret): got %d, want 0", n)
		}
		if code, body := get(t, p.base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "token") {
			t.Errorf("readyz: got %d %q, want 503 naming the token", code, body)
		}
	})
}
