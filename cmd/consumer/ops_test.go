package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestOpsEndpoints(t *testing.T) {
	tests := []struct {
		name       string
		secret     string
		wantReady  int
		wantReason string
	}{
		{"ready with NATS, streams and a token", "", http.StatusOK, "ok"},
		{"not ready without a token", "wrong-secret", http.StatusServiceUnavailable, "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := testkit.StartNATS(t, testkit.NATSOptions{})
			sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}})
			ca := filepath.Join(t.TempDir(), "ca.pem")
			if err := os.WriteFile(ca, sim.CertPEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(nil, envFrom(map[string]string{
				"NATS_URL": ns.URL(), "SITEFOLLOW_GRAPH_URL": sim.GraphURL(),
				"AZURE_AUTHORITY_HOST": sim.AuthorityURL(), "AZURE_TENANT_ID": sim.TenantID(),
				"AZURE_CLIENT_ID": sim.ClientID(), "AZURE_CLIENT_SECRET": cmp.Or(tt.secret, sim.ClientSecret()),
				"SITEFOLLOW_CA_FILE": ca, "SITEFOLLOW_HTTP_ADDR": "127.0.0.1:0", "SITEFOLLOW_BATCH_LINGER": "10ms",
			}), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			addr := make(chan string, 1)
			done := make(chan error, 1)
			go func() { done <- serve(ctx, cfg, zerolog.Nop(), func(a string) { addr <- a }) }()
			base := "http://" + <-addr
			if code, _ := get(t, base+"/livez"); code != http.StatusOK {
				t.Errorf("livez: got %d, want 200", code)
			}
			var code int
			var body string
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				if code, body = get(t, base+"/readyz"); code == tt.wantReady && strings.Contains(body, tt.wantReason) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if code != tt.wantReady || !strings.Contains(body, tt.wantReason) {
				t.Errorf("readyz: got %d %q, want %d mentioning %q", code, body, tt.wantReady, tt.wantReason)
			}
			if tt.wantReady == http.StatusOK {
				_, js := testkit.Connect(t, ns.URL())
				testkit.Publish(t, js, "ann@contoso.com", event.Follow, testSite(1))
				testkit.Eventually(t, time.Minute, "the request to settle", func() bool { return testkit.StreamMsgs(js, testkit.RequestStream) == 0 })
				_, metrics := get(t, base+"/metrics")
				for _, want := range []string{"sitefollow_events_total", "sitefollow_sites_total", "sitefollow_graph_calls_total",
					"sitefollow_graph_sites_per_call", "sitefollow_graph_inflight", "go_goroutines"} {
					if !strings.Contains(metrics, want) {
						t.Errorf("metrics lack %s", want)
					}
				}
				// Without NATS, readiness says so once, in plain words.
				ns.Shutdown()
				testkit.Eventually(t, time.Minute, "readyz to report NATS", func() bool {
					code, body = get(t, base+"/readyz")
					return code == http.StatusServiceUnavailable && strings.Contains(body, "nats: not connected")
				})
				if strings.Contains(body, "nats: nats") {
					t.Errorf("readyz repeats its prefix: %q", body)
				}
				ns.Restart()
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
}

// TestReadyzWhileTokenFails probes /readyz 50 times at once while the
// client secret is wrong: Entra is asked at most twice (start-up and one
// shared check), the body names only the failing check, and the details are
// logged once, not per probe.
func TestReadyzWhileTokenFails(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATS(t, testkit.NATSOptions{})
	sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}})
	settings := simSettings(t, ns.URL(), sim)
	settings["AZURE_CLIENT_SECRET"] = "wrong-secret"
	p := serveInProcess(t, settings, true)
	// The start-up check has asked once and failed.
	testkit.Eventually(t, time.Minute, "the start-up token check to fail", func() bool {
		return strings.Contains(p.logs.String(), "cannot obtain a Graph token; not ready")
	})
	before := sim.TokenRequests()

	const probes = 50
	bodies := make([]string, probes)
	codes := make([]int, probes)
	var wg sync.WaitGroup
	for i := range probes {
		wg.Go(func() { codes[i], bodies[i] = get(t, p.base+"/readyz") })
	}
	wg.Wait()

	if n := sim.TokenRequests() - before; n > 1 {
		t.Errorf("token requests for %d concurrent probes: got %d, want at most 1 (2 with start-up's)", probes, n)
	}
	want := "not ready\ntoken: cannot obtain a Graph token (see log)\n"
	for i := range probes {
		if codes[i] != http.StatusServiceUnavailable || bodies[i] != want {
			t.Errorf("readyz: got %d %q, want 503 %q", codes[i], bodies[i], want)
			break
		}
	}
	logs := p.logs.String()
	if n := strings.Count(logs, `"check":"token"`); n != 1 {
		t.Errorf("log lines about the failing token check: got %d, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs, "AADSTS7000215") {
		t.Errorf("log lacks Entra's error text (the details belong there):\n%s", logs)
	}
}

// TestPprofOwnAddress serves profiles on SITEFOLLOW_PPROF_ADDR and never on
// the ops address.
func TestPprofOwnAddress(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATS(t, testkit.NATSOptions{})
	sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}})
	settings := simSettings(t, ns.URL(), sim)
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	settings["SITEFOLLOW_PPROF"] = "true"
	settings["SITEFOLLOW_PPROF_ADDR"] = pprofAddr
	p := serveInProcess(t, settings, true)

	if code, _ := get(t, "http://"+pprofAddr+"/debug/pprof/cmdline"); code != http.StatusOK {
		t.Errorf("pprof address /debug/pprof/cmdline: got %d, want 200", code)
	}
	if code, _ := get(t, p.base+"/debug/pprof/cmdline"); code != http.StatusNotFound {
		t.Errorf("ops address /debug/pprof/cmdline: got %d, want 404", code)
	}
	if code, _ := get(t, "http://"+pprofAddr+"/metrics"); code != http.StatusNotFound {
		t.Errorf("pprof address /metrics: got %d, want 404", code)
	}
}
