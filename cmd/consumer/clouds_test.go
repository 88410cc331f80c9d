package main

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// TestCloudsAndCredentials runs the consumer in each cloud with each
// credential that needs an authority, against the simulator's token
// endpoint over HTTPS: the follow is applied with a token asked for the
// cloud's scope (SITEFOLLOW_GRAPH_URL points at the simulator), by the
// credential the settings choose.
func TestCloudsAndCredentials(t *testing.T) {
	t.Parallel()
	registered := testkit.NewClientCertificate(t, "sitefollow")
	issuer := testkit.NewFederatedIssuer(t)
	tests := []struct {
		name      string
		settings  map[string]string
		wantGrant string
		wantScope string
	}{
		{"global, secret by default", map[string]string{}, graphsim.GrantSecret, "https://graph.microsoft.com/.default"},
		{"usgov, forced certificate beside a secret", map[string]string{
			"SITEFOLLOW_CLOUD": "usgov", "SITEFOLLOW_CREDENTIAL": "certificate", "AZURE_CLIENT_CERTIFICATE_PATH": registered.Path,
		}, graphsim.GrantCertificate, "https://graph.microsoft.us/.default"},
		{"usgovdod, certificate found by auto", map[string]string{
			"SITEFOLLOW_CLOUD": "usgovdod", "AZURE_CLIENT_SECRET": "", "AZURE_CLIENT_CERTIFICATE_PATH": registered.Path,
			"AZURE_CLIENT_SEND_CERTIFICATE_CHAIN": "true",
		}, graphsim.GrantCertificate, "https://dod-graph.microsoft.us/.default"},
		{"china, workload identity found by auto", map[string]string{
			"SITEFOLLOW_CLOUD": "china", "AZURE_CLIENT_SECRET": "",
			"AZURE_FEDERATED_TOKEN_FILE": issuer.TokenFile(t, graphsim.FederatedAudience),
		}, graphsim.GrantFederated, "https://microsoftgraph.chinacloudapi.cn/.default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ns := testkit.StartNATS(t, testkit.NATSOptions{})
			sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)},
				ClientCertificate: registered.Cert, FederatedIssuerKey: issuer.PublicKey()})
			settings := simSettings(t, ns.URL(), sim)
			for k, v := range tt.settings {
				settings[k] = v
			}
			serveInProcess(t, settings, true)
			_, js := testkit.Connect(t, ns.URL())
			testkit.Publish(t, js, "ann@contoso.com", event.Follow, testSite(1))
			testkit.Eventually(t, time.Minute, "the follow to be applied", func() bool {
				return len(sim.Followed("ann@contoso.com")) == 1
			})
			if grants := sim.TokenGrants(); len(grants) == 0 || slices.ContainsFunc(grants, func(g string) bool { return g != tt.wantGrant }) {
				t.Errorf("token grants = %v, want only %s", grants, tt.wantGrant)
			}
			for _, scope := range sim.TokenScopes() {
				if !strings.Contains(scope, tt.wantScope) {
					t.Errorf("token scope %q, want %s", scope, tt.wantScope)
				}
			}
		})
	}
}

// TestWrongCertificateIsTransient: a certificate the app registration does
// not have is refused by the token endpoint; the consumer is not ready,
// counts the failures, and redelivers the request without acknowledging
// or dead-lettering it.
func TestWrongCertificateIsTransient(t *testing.T) {
	t.Parallel()
	registered := testkit.NewClientCertificate(t, "sitefollow")
	stranger := testkit.NewClientCertificate(t, "stranger")
	ns := testkit.StartNATS(t, testkit.NATSOptions{})
	sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}, ClientCertificate: registered.Cert})
	settings := simSettings(t, ns.URL(), sim)
	settings["SITEFOLLOW_CREDENTIAL"] = "certificate"
	settings["AZURE_CLIENT_CERTIFICATE_PATH"] = stranger.Path
	settings["SITEFOLLOW_NAK_DELAY"] = "50ms"
	settings["SITEFOLLOW_NAK_MAX_DELAY"] = "100ms"
	settings["SITEFOLLOW_MAX_DELIVER"] = "3"
	p := serveInProcess(t, settings, true)
	nc, js := testkit.Connect(t, ns.URL())
	acks := testkit.WatchAcks(t, nc, testkit.RequestStream, "sitefollow")
	seq := testkit.Publish(t, js, "ann@contoso.com", event.Follow, testSite(1))

	// Past SITEFOLLOW_MAX_DELIVER: a token failure spends no deliveries.
	testkit.Eventually(t, time.Minute, "the request to be redelivered past max-deliver", func() bool {
		return acks.Delivered(seq) > 4
	})
	if acks.Acked(seq) {
		t.Error("the request was acknowledged without a token")
	}
	if n := testkit.StreamMsgs(js, testkit.RequestStream); n != 1 {
		t.Errorf("requests in the stream = %d, want 1 (kept)", n)
	}
	if letters := testkit.DeadLetters(t, js); len(letters) != 0 {
		t.Errorf("dead letters = %v, want none", letters)
	}
	if n := sim.CallCount(); n != 0 {
		t.Errorf("Graph calls = %d, want none without a token", n)
	}
	code, body := get(t, p.base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "token:") {
		t.Errorf("readyz = %d %q, want 503 naming the token check", code, body)
	}
	_, metrics := get(t, p.base+"/metrics")
	if !strings.Contains(metrics, "sitefollow_graph_token_failures_total ") || strings.Contains(metrics, "sitefollow_graph_token_failures_total 0\n") {
		t.Errorf("metrics lack a non-zero sitefollow_graph_token_failures_total:\n%s", metrics)
	}
	if logs := p.logs.String(); !strings.Contains(logs, "AADSTS700027") {
		t.Errorf("log lacks the token endpoint's refusal:\n%s", logs)
	}
}

// TestSystemAssignedManagedIdentity runs the consumer with nothing but the
// host's identity endpoint (IDENTITY_ENDPOINT and IDENTITY_HEADER, as App
// Service sets them): no tenant, no client ID, no secret. auto falls to
// managed identity, which without a client ID is the host's
// system-assigned identity, and the follow is applied with its token.
// azidentity reads those variables from the process environment itself,
// so this test cannot run in parallel.
func TestSystemAssignedManagedIdentity(t *testing.T) {
	ns := testkit.StartNATS(t, testkit.NATSOptions{})
	sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}})
	t.Setenv("IDENTITY_ENDPOINT", sim.ManagedIdentityEndpoint())
	t.Setenv("IDENTITY_HEADER", sim.IdentityHeader())
	settings := simSettings(t, ns.URL(), sim)
	for _, k := range []string{"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"} {
		delete(settings, k)
	}
	serveInProcess(t, settings, true)
	_, js := testkit.Connect(t, ns.URL())
	testkit.Publish(t, js, "ann@contoso.com", event.Follow, testSite(1))
	testkit.Eventually(t, time.Minute, "the follow to be applied", func() bool {
		return len(sim.Followed("ann@contoso.com")) == 1
	})
	if grants := sim.TokenGrants(); len(grants) == 0 || slices.ContainsFunc(grants, func(g string) bool { return g != graphsim.GrantManaged }) {
		t.Errorf("token grants = %v, want only %s", grants, graphsim.GrantManaged)
	}
}
