package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/natsconn"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// natsFailures are servers the consumer cannot use, each with the settings
// that fail against it and what the failure must say besides the server.
func natsFailures() []struct {
	name     string
	server   func(t *testing.T) func(*server.Options) // nil: nothing listens
	settings func(t *testing.T, addr string) map[string]string
	want     string
} {
	return []struct {
		name     string
		server   func(t *testing.T) func(*server.Options)
		settings func(t *testing.T, addr string) map[string]string
		want     string
	}{
		{name: "unreachable", settings: func(t *testing.T, _ string) map[string]string {
			return map[string]string{"NATS_URL": fmt.Sprintf("nats://127.0.0.1:%d", testkit.FreePort(t))}
		}, want: "unreachable"},
		{name: "unknown CA", server: func(t *testing.T) func(*server.Options) {
			return testkit.NewCA(t, "private CA").ServerTLS(t, "nats.internal.example", false)
		}, settings: func(t *testing.T, addr string) map[string]string {
			return map[string]string{"NATS_URL": "tls://" + addr, "NATS_CA": testkit.NewCA(t, "another CA").File}
		}, want: "CN=nats.internal.example"},
		{name: "bad password", server: func(t *testing.T) func(*server.Options) {
			return func(o *server.Options) { o.Username, o.Password = "sitefollow", "right" }
		}, settings: func(t *testing.T, addr string) map[string]string {
			return map[string]string{"NATS_URL": "nats://" + addr, "NATS_USER": "sitefollow", "NATS_PASSWORD": "wrong"}
		}, want: "authorization"},
		{name: "no JetStream", server: func(t *testing.T) func(*server.Options) {
			return func(o *server.Options) { o.JetStream = false }
		}, settings: func(t *testing.T, addr string) map[string]string {
			return map[string]string{"NATS_URL": "nats://" + addr}
		}, want: "JetStream"},
	}
}

// TestRunReportsWhyNATSCannotBeUsed: `consumer run` keeps retrying, logs
// the cause with the server's host:port at warn or error, and /readyz
// says the same, instead of a stream request's timeout.
func TestRunReportsWhyNATSCannotBeUsed(t *testing.T) {
	t.Parallel()
	for _, tt := range natsFailures() {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := ""
			if tt.server != nil {
				addr = testkit.ServerAddr(testkit.StartNATSServer(t, tt.server(t)))
			}
			sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}})
			settings := simSettings(t, "", sim)
			for k, v := range tt.settings(t, addr) {
				settings[k] = v
			}
			server := natsconn.Servers(settings["NATS_URL"])
			p := serveInProcess(t, settings, false)
			testkit.Eventually(t, time.Minute, "a warn or error line naming "+server+" and "+tt.want, func() bool {
				for line := range strings.SplitSeq(p.logs.String(), "\n") {
					var rec struct{ Level string }
					if json.Unmarshal([]byte(line), &rec) != nil || (rec.Level != "warn" && rec.Level != "error") {
						continue
					}
					if strings.Contains(line, server) && strings.Contains(line, tt.want) {
						return true
					}
				}
				return false
			})
			var code int
			var body string
			testkit.Eventually(t, time.Minute, "/readyz to give the cause", func() bool {
				code, body = get(t, p.base+"/readyz")
				return code == http.StatusServiceUnavailable && strings.Contains(body, server) && strings.Contains(body, tt.want)
			})
			if strings.Contains(p.logs.String(), "wrong") {
				t.Errorf("the log shows the password")
			}
		})
	}
}

// TestDialNATSFailsAtOnceNamingServerAndCause is the tools' one-shot
// connection (dlq, send) against the same failures.
func TestDialNATSFailsAtOnceNamingServerAndCause(t *testing.T) {
	t.Parallel()
	for _, tt := range natsFailures() {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := ""
			if tt.server != nil {
				addr = testkit.ServerAddr(testkit.StartNATSServer(t, tt.server(t)))
			}
			n := bindNATS(t, tt.settings(t, addr))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			nc, err := dialNATS(ctx, n, "test")
			if err == nil {
				nc.Close()
				t.Fatal("got a connection, want an error")
			}
			var classified *natsconn.Error
			if !errors.As(err, &classified) {
				t.Fatalf("got %v (%T), want a *natsconn.Error", err, err)
			}
			for _, w := range []string{natsconn.Servers(n.URL), tt.want} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

// TestRunConnectsThroughANATSContext: with NATS_CONTEXT and no NATS_URL the
// consumer reaches the server the context names, with its credentials.
func TestRunConnectsThroughANATSContext(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATSServer(t, func(o *server.Options) { o.Username, o.Password = "ctxuser", "ctxpass" })
	dir := t.TempDir()
	testkit.WriteNATSContext(t, dir, "prod", map[string]string{
		"url": "nats://" + testkit.ServerAddr(ns), "user": "ctxuser", "password": "ctxpass"}, false)
	sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}})
	settings := simSettings(t, "", sim)
	delete(settings, "NATS_URL")
	settings["NATS_CONTEXT"] = "prod"
	settings["XDG_CONFIG_HOME"] = dir
	p := serveInProcess(t, settings, true)
	testkit.Eventually(t, time.Minute, "/readyz to be ready", func() bool {
		code, _ := get(t, p.base+"/readyz")
		return code == http.StatusOK
	})
}

func TestRunRefusesAMissingContext(t *testing.T) {
	t.Parallel()
	sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}})
	settings := simSettings(t, "", sim)
	delete(settings, "NATS_URL")
	settings["NATS_CONTEXT"] = "nosuch"
	settings["XDG_CONFIG_HOME"] = t.TempDir()
	cfg, err := config.Load(nil, envFrom(settings), nil)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log, err := config.NewLogger(cfg, &testkit.SyncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	err = serve(context.Background(), cfg, log, nil)
	var ce *natsconn.ContextError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), `"nosuch"`) {
		t.Fatalf("got %v, want an error naming the context", err)
	}
}

// bindNATS resolves the NATS settings from env as a tool's flags would.
func bindNATS(t *testing.T, env map[string]string) config.NATS {
	t.Helper()
	fs := newToolFlags()
	resolve := config.BindNATS(fs, envFrom(env))
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	n, err := resolve()
	if err != nil {
		t.Fatalf("nats settings: %v", err)
	}
	return n
}

func newToolFlags() *flag.FlagSet {
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}
