package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// simSettings points a consumer at natsURL and sim, trusting the PEM
// certificates in extraCAs as well as the simulator's authority.
func simSettings(t *testing.T, natsURL string, sim *graphsim.Server, extraCAs ...[]byte) map[string]string {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pem := bytes.Join(append([][]byte{sim.CertPEM()}, extraCAs...), []byte("\n"))
	if err := os.WriteFile(ca, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"NATS_URL": natsURL, "SITEFOLLOW_GRAPH_URL": sim.GraphURL(),
		"AZURE_AUTHORITY_HOST": sim.AuthorityURL(), "AZURE_TENANT_ID": sim.TenantID(),
		"AZURE_CLIENT_ID": sim.ClientID(), "AZURE_CLIENT_SECRET": sim.ClientSecret(),
		"SITEFOLLOW_CA_FILE": ca, "SITEFOLLOW_HTTP_ADDR": "127.0.0.1:0", "SITEFOLLOW_BATCH_LINGER": "10ms",
	}
}

// inProcess is the real serve, configured from settings through config.Load
// and logging through config.NewLogger as `consumer run` does, running in the
// test's process.
type inProcess struct {
	base string // http://host:port of the ops server
	logs *testkit.SyncBuffer
	stop func() // cancels serve and waits for it; safe to repeat
}

// serveInProcess starts serve and waits until it is ready to handle
// requests (the ledger is open), or only until the ops server listens when
// waitStarted is false. serve is stopped when the test ends.
func serveInProcess(t *testing.T, settings map[string]string, waitStarted bool) *inProcess {
	t.Helper()
	cfg, err := config.Load(nil, envFrom(settings), nil)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	p := &inProcess{logs: &testkit.SyncBuffer{}}
	log, err := config.NewLogger(cfg, p.logs)
	if err != nil {
		t.Fatalf("logger: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, log, func(a string) { addr <- a }) }()
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(p.stop)
	if waitStarted {
		select {
		case a := <-addr:
			p.base = "http://" + a
		case err := <-done:
			done <- err
			t.Fatalf("serve ended before it started: %v", err)
		case <-time.After(2 * time.Minute):
			t.Fatal("serve did not start within 2 minutes")
		}
		return p
	}
	deadline := time.Now().Add(2 * time.Minute)
	for p.base == "" {
		if time.Now().After(deadline) {
			t.Fatal("ops server did not listen within 2 minutes")
		}
		if a := listenAddr(p.logs.String()); a != "" {
			p.base = "http://" + a
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// listenAddr finds the ops address in serve's log line saying it listens.
func listenAddr(logs string) string {
	for line := range strings.SplitSeq(logs, "\n") {
		if !strings.Contains(line, "serving /livez") {
			continue
		}
		_, rest, ok := strings.Cut(line, `"addr":"`)
		if !ok {
			continue
		}
		a, _, _ := strings.Cut(rest, `"`)
		return a
	}
	return ""
}
