package natsconn_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sitefollow/sitefollow/internal/natsconn"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// dial resolves s and connects once, as the command-line tools do.
func dial(t *testing.T, s natsconn.Settings) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	target, err := natsconn.Resolve(ctx, s)
	if err != nil {
		return err
	}
	nc, err := target.Dial(ctx)
	if err != nil {
		return err
	}
	nc.Close()
	return nil
}

func url(ns *server.Server, scheme string) string {
	return fmt.Sprintf("%s://%s", scheme, testkit.ServerAddr(ns))
}

// TestEachOptionAgainstAServerRequiringIt connects with each option to a
// server that admits nothing else.
func TestEachOptionAgainstAServerRequiringIt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(t *testing.T) (func(*server.Options), func(ns *server.Server) natsconn.Settings)
	}{
		{"user and password", func(t *testing.T) (func(*server.Options), func(*server.Server) natsconn.Settings) {
			return func(o *server.Options) { o.Username, o.Password = "alice", "s3cret" },
				func(ns *server.Server) natsconn.Settings {
					return natsconn.Settings{URL: url(ns, "nats"), User: "alice", Password: "s3cret"}
				}
		}},
		{"token", func(t *testing.T) (func(*server.Options), func(*server.Server) natsconn.Settings) {
			return func(o *server.Options) { o.Authorization = "t0ken" },
				func(ns *server.Server) natsconn.Settings {
					return natsconn.Settings{URL: url(ns, "nats"), Token: "t0ken"}
				}
		}},
		{"nkey seed file", func(t *testing.T) (func(*server.Options), func(*server.Server) natsconn.Settings) {
			seed, require := testkit.NkeyUser(t)
			return require, func(ns *server.Server) natsconn.Settings {
				return natsconn.Settings{URL: url(ns, "nats"), NKeyFile: seed}
			}
		}},
		{"creds file (operator mode)", func(t *testing.T) (func(*server.Options), func(*server.Server) natsconn.Settings) {
			creds, require := testkit.OperatorUser(t)
			return require, func(ns *server.Server) natsconn.Settings {
				return natsconn.Settings{URL: url(ns, "nats"), CredsFile: creds}
			}
		}},
		{"TLS with CA and client certificate", func(t *testing.T) (func(*server.Options), func(*server.Server) natsconn.Settings) {
			ca := testkit.NewCA(t, "sitefollow test CA")
			cert, key := ca.Issue(t, "sitefollow-client")
			return ca.ServerTLS(t, "nats-test-server", true), func(ns *server.Server) natsconn.Settings {
				return natsconn.Settings{URL: url(ns, "tls"), CAFile: ca.File, CertFile: cert, KeyFile: key}
			}
		}},
		{"named context", func(t *testing.T) (func(*server.Options), func(*server.Server) natsconn.Settings) {
			dir := t.TempDir()
			return func(o *server.Options) { o.Username, o.Password = "bob", "pw" }, func(ns *server.Server) natsconn.Settings {
				testkit.WriteNATSContext(t, dir, "prod", map[string]string{"url": url(ns, "nats"), "user": "bob", "password": "pw"}, false)
				return natsconn.Settings{Context: "prod", ConfigDir: dir}
			}
		}},
		{"selected context", func(t *testing.T) (func(*server.Options), func(*server.Server) natsconn.Settings) {
			dir := t.TempDir()
			return func(o *server.Options) { o.Authorization = "ctx-token" }, func(ns *server.Server) natsconn.Settings {
				testkit.WriteNATSContext(t, dir, "dev", map[string]string{"url": url(ns, "nats"), "token": "ctx-token"}, true)
				return natsconn.Settings{ConfigDir: dir}
			}
		}},
		{"context with TLS files", func(t *testing.T) (func(*server.Options), func(*server.Server) natsconn.Settings) {
			dir := t.TempDir()
			ca := testkit.NewCA(t, "context CA")
			cert, key := ca.Issue(t, "context-client")
			return ca.ServerTLS(t, "nats-test-server", true), func(ns *server.Server) natsconn.Settings {
				testkit.WriteNATSContext(t, dir, "tls", map[string]string{"url": url(ns, "tls"), "ca": ca.File, "cert": cert, "key": key}, false)
				return natsconn.Settings{Context: "tls", ConfigDir: dir}
			}
		}},
		{"explicit settings win over the context", func(t *testing.T) (func(*server.Options), func(*server.Server) natsconn.Settings) {
			dir := t.TempDir()
			creds, _ := testkit.OperatorUser(t) // the context's, which this server would refuse
			return func(o *server.Options) { o.Username, o.Password = "carol", "right" }, func(ns *server.Server) natsconn.Settings {
				testkit.WriteNATSContext(t, dir, "stale", map[string]string{
					"url": "nats://127.0.0.1:1", "creds": creds, "user": "carol", "password": "wrong"}, true)
				return natsconn.Settings{URL: url(ns, "nats"), User: "carol", Password: "right", ConfigDir: dir}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require, settings := tt.setup(t)
			ns := testkit.StartNATSServer(t, require)
			if err := dial(t, settings(ns)); err != nil {
				t.Fatalf("got %v, want a connection", err)
			}
			// The server really requires it: nothing gets in without.
			err := dial(t, natsconn.Settings{URL: url(ns, "nats")})
			if err == nil {
				t.Fatalf("a client without the option got in; the test server requires nothing")
			}
		})
	}
}

// TestFailuresNameTheServerAndCause checks each failure's class and text.
func TestFailuresNameTheServerAndCause(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		server    func(t *testing.T) func(*server.Options) // nil: no server
		settings  func(addr string) natsconn.Settings
		wantCause natsconn.Cause
		wantText  []string
	}{
		{name: "unreachable port", settings: func(string) natsconn.Settings {
			return natsconn.Settings{URL: fmt.Sprintf("nats://127.0.0.1:%d", testkit.FreePort(t))}
		}, wantCause: natsconn.CauseUnreachable, wantText: []string{"127.0.0.1:", "unreachable"}},
		{name: "unknown CA", server: func(t *testing.T) func(*server.Options) {
			return testkit.NewCA(t, "private CA").ServerTLS(t, "nats.internal.example", false)
		}, settings: func(addr string) natsconn.Settings {
			return natsconn.Settings{URL: "tls://" + addr, CAFile: testkit.NewCA(t, "another CA").File}
		}, wantCause: natsconn.CauseTLS, wantText: []string{"CN=nats.internal.example", "TLS"}},
		{name: "unknown CA, system roots", server: func(t *testing.T) func(*server.Options) {
			return testkit.NewCA(t, "private CA").ServerTLS(t, "nats.internal.example", false)
		}, settings: func(addr string) natsconn.Settings {
			return natsconn.Settings{URL: "tls://" + addr}
		}, wantCause: natsconn.CauseTLS, wantText: []string{"CN=nats.internal.example"}},
		{name: "bad password", server: func(t *testing.T) func(*server.Options) {
			return func(o *server.Options) { o.Username, o.Password = "alice", "right" }
		}, settings: func(addr string) natsconn.Settings {
			return natsconn.Settings{URL: "nats://" + addr, User: "alice", Password: "wrong"}
		}, wantCause: natsconn.CauseAuthorization, wantText: []string{"authorization"}},
		{name: "JetStream disabled on the server", server: func(t *testing.T) func(*server.Options) {
			return func(o *server.Options) { o.JetStream = false }
		}, settings: func(addr string) natsconn.Settings {
			return natsconn.Settings{URL: "nats://" + addr}
		}, wantCause: natsconn.CauseNoJetStream, wantText: []string{"JetStream"}},
		{name: "JetStream not enabled for the account", server: func(t *testing.T) func(*server.Options) {
			return func(o *server.Options) {
				acc := server.NewAccount("NOJS")
				o.Accounts = []*server.Account{acc}
				o.Users = []*server.User{{Username: "nojs", Password: "pw", Account: acc}}
			}
		}, settings: func(addr string) natsconn.Settings {
			return natsconn.Settings{URL: "nats://" + addr, User: "nojs", Password: "pw"}
		}, wantCause: natsconn.CauseNoJetStream, wantText: []string{"JetStream"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := ""
			if tt.server != nil {
				addr = testkit.ServerAddr(testkit.StartNATSServer(t, tt.server(t)))
			}
			s := tt.settings(addr)
			err := dial(t, s)
			t.Logf("error: %v", err)
			var got *natsconn.Error
			if !errors.As(err, &got) {
				t.Fatalf("got %v (%T), want a *natsconn.Error", err, err)
			}
			if got.Cause != tt.wantCause {
				t.Errorf("got cause %v, want %v (%v)", got.Cause, tt.wantCause, err)
			}
			want := append([]string{natsconn.Servers(s.URL)}, tt.wantText...)
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "wrong") {
				t.Errorf("got %q, which shows the password", err)
			}
		})
	}
}

func TestMissingContextIsAnErrorNamingIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	testkit.WriteNATSContext(t, dir, "other", map[string]string{"url": "nats://127.0.0.1:4222"}, false)
	tests := []struct {
		name string
		s    natsconn.Settings
		want string
	}{
		{"named, not saved", natsconn.Settings{Context: "prod", ConfigDir: dir}, `"prod"`},
		{"named, no config dir", natsconn.Settings{Context: "prod"}, `"prod"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := natsconn.Resolve(context.Background(), tt.s)
			var ce *natsconn.ContextError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a context error naming %s", err, tt.want)
			}
		})
	}
	t.Run("selected, not saved", func(t *testing.T) {
		sel := t.TempDir()
		testkit.WriteNATSContext(t, sel, "gone", map[string]string{}, true)
		if err := removeContext(sel, "gone"); err != nil {
			t.Fatal(err)
		}
		_, err := natsconn.Resolve(context.Background(), natsconn.Settings{ConfigDir: sel})
		if err == nil || !strings.Contains(err.Error(), `"gone"`) {
			t.Fatalf("got %v, want an error naming the selected context", err)
		}
	})
}

func TestResolveURL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	testkit.WriteNATSContext(t, dir, "ctx", map[string]string{"url": "nats://ctx.example:4222"}, false)
	tests := []struct {
		name string
		s    natsconn.Settings
		want string
	}{
		{"default", natsconn.Settings{ConfigDir: dir}, natsconn.DefaultURL},
		{"context's", natsconn.Settings{Context: "ctx", ConfigDir: dir}, "nats://ctx.example:4222"},
		{"explicit over the context's", natsconn.Settings{URL: "nats://given:4222", Context: "ctx", ConfigDir: dir}, "nats://given:4222"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := natsconn.Resolve(context.Background(), tt.s)
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			if got.URL != tt.want {
				t.Errorf("got URL %q, want %q", got.URL, tt.want)
			}
		})
	}
}

func TestServers(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"nats://alice:pw@127.0.0.1:4222", "127.0.0.1:4222"},
		{"tls://a.example, nats://tok@b.example:4333", "a.example:4222,b.example:4333"},
		{"wss://ws.example", "ws.example:443"},
		{"127.0.0.1:4222", "127.0.0.1:4222"},
	}
	for _, tt := range tests {
		if got := natsconn.Servers(tt.in); got != tt.want {
			t.Errorf("Servers(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
