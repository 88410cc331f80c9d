package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// TestSecretsNeverShown runs a whole scenario at trace level with
// distinctive secrets, through a failing NATS login, 401, 429, 503, a 207
// with a rejected site, and a failing token endpoint, then scans every
// output: logs, /metrics, every /readyz body, dead letters and their
// headers. None may hold the client secret, a NATS password or any access
// token the simulator issued.
func TestSecretsNeverShown(t *testing.T) {
	t.Parallel()
	const (
		clientSecret = "CLIENT-SECRET-9f3b7c1e-never-shown"
		natsUser     = "sitefollow"
		natsPassword = "NATS-PASSWORD-4d2a8e6b-never-shown"
		wrongNATS    = "WRONG-NATS-PASSWORD-7c5e1f0a-never-shown"
	)
	ns := testkit.StartNATS(t, testkit.NATSOptions{User: natsUser, Password: natsPassword})
	sites := []string{testSite(1), testSite(2), testSite(3), testSite(4), testSite(5), testSite(6)}
	sim := testkit.StartSim(t, graphsim.Options{Sites: sites, ClientSecret: clientSecret})
	settings := func(natsURL string) map[string]string {
		s := simSettings(t, natsURL, sim)
		s["SITEFOLLOW_LOG_LEVEL"] = "trace"
		s["SITEFOLLOW_GRAPH_MAX_ATTEMPTS"] = "3"
		s["SITEFOLLOW_NAK_DELAY"] = "100ms"
		s["SITEFOLLOW_NAK_MAX_DELAY"] = "1s"
		s["SITEFOLLOW_MAX_DELIVER"] = "4"
		return s
	}

	var outputs []string
	var mu sync.Mutex
	collect := func(what, text string) {
		mu.Lock()
		defer mu.Unlock()
		outputs = append(outputs, what+"\x00"+text)
	}
	probe := func(p *inProcess, what string) {
		_, body := get(t, p.base+"/readyz")
		collect(what+" /readyz", body)
	}

	// A failing NATS login: the wrong password, for a few reconnect rounds.
	badLogin := serveInProcess(t, settings(ns.URLWith(natsUser, wrongNATS)), false)
	testkit.Eventually(t, time.Minute, "readiness to report NATS down", func() bool {
		_, body := get(t, badLogin.base+"/readyz")
		return strings.Contains(body, "nats:")
	})
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		probe(badLogin, "wrong NATS password")
	}
	_, metrics := get(t, badLogin.base+"/metrics")
	collect("wrong NATS password /metrics", metrics)
	badLogin.stop()
	collect("wrong NATS password log", badLogin.logs.String())

	p := serveInProcess(t, settings(ns.URLWith(natsUser, natsPassword)), true)
	stopProbing := make(chan struct{})
	var probing sync.WaitGroup
	probing.Go(func() {
		for {
			select {
			case <-stopProbing:
				return
			case <-time.After(50 * time.Millisecond):
				probe(p, "scenario")
			}
		}
	})
	_, js := testkit.Connect(t, ns.URLWith(natsUser, natsPassword))
	settled := func(what string) {
		t.Helper()
		testkit.Eventually(t, 2*time.Minute, what, func() bool { return testkit.StreamMsgs(js, testkit.RequestStream) == 0 })
	}
	testkit.Publish(t, js, "ann@contoso.com", event.Follow, testSite(1))
	settled("a plain follow to settle")

	sim.RevokeTokens() // 401, then a fresh token
	testkit.Publish(t, js, "ann@contoso.com", event.Follow, testSite(2))
	settled("the follow after a 401 to settle")

	sim.Throttle(1, "1") // 429
	testkit.Publish(t, js, "bob@contoso.com", event.Follow, testSite(3))
	settled("the follow after a 429 to settle")

	sim.Unavailable(2, http.StatusServiceUnavailable) // 503
	testkit.Publish(t, js, "cat@contoso.com", event.Follow, testSite(4))
	settled("the follow after two 503s to settle")

	sim.FailSite(testSite(5), "accessDenied", 1) // 207 with a rejected site
	testkit.Publish(t, js, "dan@contoso.com", event.Follow, testSite(5), testSite(6))
	testkit.PublishBody(t, js, []byte(`{"userId":"eve@contoso.com","action":"follow","siteIds":["not-a-site"]}`))
	settled("the 207 and the invalid event to settle")

	// A failing token endpoint: the token is revoked and Entra answers 503
	// for a while, then recovers.
	sim.RevokeTokens()
	sim.FailTokens(6, http.StatusServiceUnavailable)
	testkit.Publish(t, js, "fay@contoso.com", event.Follow, testSite(6))
	settled("the follow through a failing token endpoint to settle")

	close(stopProbing)
	probing.Wait()
	probe(p, "end")
	_, metrics = get(t, p.base+"/metrics")
	collect("/metrics", metrics)
	for _, m := range testkit.DeadLetterMessages(t, js) {
		var h strings.Builder
		for k, vs := range m.Header {
			fmt.Fprintf(&h, "%s: %s\n", k, strings.Join(vs, ", "))
		}
		collect(fmt.Sprintf("dead letter %d on %s", m.Sequence, m.Subject), h.String()+"\n"+string(m.Data))
	}
	p.stop()
	collect("scenario log", p.logs.String())

	// The scenario must have gone through every answer it claims to.
	statuses := map[int]bool{}
	for _, c := range sim.Calls() {
		statuses[c.Status] = true
	}
	for _, want := range []int{http.StatusOK, http.StatusMultiStatus, http.StatusUnauthorized, http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		if !statuses[want] {
			t.Errorf("the simulator never answered %d; the scenario does not cover it", want)
		}
	}
	tokens := sim.IssuedTokens()
	if len(tokens) < 3 {
		t.Errorf("tokens issued: got %d, want at least 3 (one per revocation and the first)", len(tokens))
	}
	if n := len(testkit.DeadLetterMessages(t, js)); n < 2 {
		t.Errorf("dead letters: got %d, want at least 2 (the rejected site and the invalid event)", n)
	}

	secrets := map[string]string{"client secret": clientSecret, "NATS password": natsPassword, "wrong NATS password": wrongNATS}
	for i, tok := range tokens {
		secrets[fmt.Sprintf("access token %d", i+1)] = tok
	}
	for _, out := range outputs {
		what, text, _ := strings.Cut(out, "\x00")
		for name, secret := range secrets {
			if i := strings.Index(text, secret); i >= 0 {
				t.Errorf("%s shows the %s: …%s…", what, name, text[max(0, i-200):min(len(text), i+len(secret)+50)])
			}
		}
	}
}
