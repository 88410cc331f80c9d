package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// TestMain lets a test start this test binary as the real consumer process,
// so signals and kill -9 are exercised on the real main.
func TestMain(m *testing.M) {
	if os.Getenv("SITEFOLLOW_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestSubcommands(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		wantOut []string
	}{
		{name: "no subcommand", args: nil, wantErr: "missing subcommand"},
		{name: "unknown subcommand", args: []string{"serve"}, wantErr: `unknown subcommand "serve"`},
		{name: "version", args: []string{"version"}, wantOut: []string{"sitefollow dev (commit ", runtime.Version()}},
		{name: "--version", args: []string{"--version"}, wantOut: []string{"sitefollow dev (commit ", runtime.Version()}},
		{name: "help", args: []string{"--help"}, wantOut: []string{"subcommands:", "--help"}},
		{name: "demo help", args: []string{"demo", "--help"}, wantErr: flag.ErrHelp.Error(), wantOut: []string{"consumer demo", "-timeout"}},
		{name: "bench help", args: []string{"bench", "--help"}, wantErr: flag.ErrHelp.Error(), wantOut: []string{"consumer bench", "-scenarios"}},
		{name: "run help documents every setting", args: []string{"run", "--help"}, wantErr: flag.ErrHelp.Error(),
			wantOut: []string{"NATS_URL", "nats://127.0.0.1:4222", "SITEFOLLOW_GRAPH_URL", "SITEFOLLOW_HTTP_ADDR", ":8080",
				"SITEFOLLOW_BATCH_MAX_SITES", "SITEFOLLOW_BATCH_LINGER", "SITEFOLLOW_ACK_WAIT", "SITEFOLLOW_MAX_DELIVER",
				"SITEFOLLOW_MAX_CONCURRENCY", "SITEFOLLOW_LOG_LEVEL", "SITEFOLLOW_LOG_FORMAT", "AZURE_TENANT_ID"}},
		{name: "bad duration refused naming the setting", args: []string{"run"},
			env:     map[string]string{"SITEFOLLOW_BATCH_LINGER": "soon", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "s"},
			wantErr: "SITEFOLLOW_BATCH_LINGER"},
		{name: "bad flag refused naming the setting", args: []string{"run", "--batch-max-sites", "0"},
			env:     map[string]string{"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "s"},
			wantErr: "--batch-max-sites"},
		{name: "plain http to a remote Graph refused", args: []string{"run"},
			env:     map[string]string{"SITEFOLLOW_GRAPH_URL": "http://graph.example.com", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "s"},
			wantErr: "SITEFOLLOW_GRAPH_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := dispatch(t.Context(), tt.args, envFrom(tt.env), &out, &errOut)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("error: got %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error: got %v, want one containing %q", err, tt.wantErr)
			}
			if errors.Is(err, flag.ErrHelp) && exitCode(err) != 0 {
				t.Errorf("exit code for help: got %d, want 0", exitCode(err))
			}
			// What was asked for (help, the version) goes to stdout.
			for _, w := range tt.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s\nstderr:\n%s", w, out.String(), errOut.String())
				}
			}
		})
	}
}

func TestDemo(t *testing.T) {
	var out, errOut bytes.Buffer
	// The caller's own NATS set-up (a context that does not exist here, a
	// user without a password) must not reach the embedded server.
	env := envFrom(map[string]string{"SITEFOLLOW_LOG_LEVEL": "warn", "NATS_CONTEXT": "production", "NATS_USER": "someone"})
	if err := dispatch(t.Context(), []string{"demo"}, env, &out, &errOut); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	summary := out.String()
	for _, want := range []string{"events published", "Graph calls", "sites per call", "invalidEvent", "invalidRequest",
		"(0 left in SITEFOLLOW)", "alice@contoso.com", "consumer dlq replay", "replayed 1 of 1"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
	// The replayed follow was applied once access was granted.
	if !strings.Contains(summary, "sales") {
		t.Errorf("summary: alice does not follow sales after the replay:\n%s", summary)
	}
}

// rig is one test's world: an embedded NATS server, the simulator and the
// environment of a consumer pointed at both.
type rig struct {
	t    *testing.T
	nats *testkit.NATS
	sim  *graphsim.Server
	js   jetstream.JetStream
	env  []string
}

func newRig(t *testing.T, settings map[string]string) *rig {
	t.Helper()
	n := testkit.StartNATS(t, testkit.NATSOptions{})
	sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1), testSite(2), testSite(3)}})
	_, js := testkit.Connect(t, n.URL())
	env := append(testkit.ConsumerEnv(t, n.URL(), sim, settings), "SITEFOLLOW_TEST_MAIN=1")
	return &rig{t: t, nats: n, sim: sim, js: js, env: env}
}

func testSite(n int) string { return testkit.Site(n) }

// start runs this test binary as the consumer and waits until it has
// provisioned its streams.
func (r *rig) start(name string) *testkit.Consumer {
	r.t.Helper()
	c := testkit.StartConsumer(r.t, testkit.ConsumerOptions{Exe: os.Args[0], Env: r.env, Name: name})
	r.eventually("the consumer to provision its streams", func() bool { return testkit.ConsumerInfo(r.js) != nil })
	return c
}

func (r *rig) eventually(what string, cond func() bool) {
	r.t.Helper()
	testkit.Eventually(r.t, time.Minute, what, cond)
}

func (r *rig) msgs(stream string) uint64 { return testkit.StreamMsgs(r.js, stream) }

func (r *rig) send(user string, action event.Action, sites ...string) {
	r.t.Helper()
	testkit.Publish(r.t, r.js, user, action, sites...)
}

func TestSIGTERMMidBatchLosesNothing(t *testing.T) {
	p := newRig(t, map[string]string{"SITEFOLLOW_BATCH_LINGER": "5s", "SITEFOLLOW_SHUTDOWN_TIMEOUT": "30s", "SITEFOLLOW_LOG_LEVEL": "debug"})
	p.sim.SetLatency(time.Second)
	c := p.start("consumer")
	p.send("ann@contoso.com", event.Follow, testSite(1), testSite(2))
	p.send("bob@contoso.com", event.Follow, testSite(3))
	p.eventually("messages delivered and held", func() bool {
		info := testkit.ConsumerInfo(p.js)
		return info != nil && info.NumAckPending == 2
	})
	// Linger is 5s, so the batches are pending, not yet sent: SIGTERM must
	// flush them, wait for Graph and ack.
	c.Term()
	if err := c.Wait(time.Minute); err != nil {
		t.Fatalf("exit: got %v, want status 0", err)
	}
	if got := p.msgs("SITEFOLLOW"); got != 0 {
		t.Errorf("requests left: got %d, want 0", got)
	}
	if got, want := p.sim.Followed("ann@contoso.com"), []string{testSite(1), testSite(2)}; !slices.Equal(got, want) {
		t.Errorf("ann followed: got %v, want %v", got, want)
	}
	if got, want := p.sim.Followed("bob@contoso.com"), []string{testSite(3)}; !slices.Equal(got, want) {
		t.Errorf("bob followed: got %v, want %v", got, want)
	}
	checkCleanRunLogs(t, c.Logs())
}

// checkCleanRunLogs checks the log of a run that started, worked and was
// stopped without trouble: it says each step at info level, repeats no key
// on any line, and warns about nothing (a clean shutdown is not a problem).
func checkCleanRunLogs(t *testing.T, logs string) {
	t.Helper()
	lines := testkit.LogLines(t, logs)
	seen := make(map[string]bool)
	for _, l := range lines {
		seen[l.Message()] = true
		if lv := l.Level(); lv == "warn" || lv == "error" {
			t.Errorf("clean run logged at %s: %s", lv, l.Text)
		}
	}
	for _, want := range []string{"starting sitefollow", "nats connected", "streams ready", "consuming",
		"shutting down: flushing pending batches", "stopped"} {
		if !seen[want] {
			t.Errorf("no %q line in the log:\n%s", want, logs)
		}
	}
}

func TestKill9MidBatchLosesNothingAndDeadLettersOnce(t *testing.T) {
	// The killed process keeps its users' leases for their TTL: keep it short.
	p := newRig(t, map[string]string{"SITEFOLLOW_BATCH_LINGER": "200ms", "SITEFOLLOW_ACK_WAIT": "5s", "SITEFOLLOW_LOG_LEVEL": "debug",
		"SITEFOLLOW_GRAPH_TIMEOUT": "5s", "SITEFOLLOW_LEASE_TTL": "15s"})
	p.sim.SetFollowed("ann@contoso.com", testSite(1))
	// One batch for ann: the add call dead-letters an unknown site at once,
	// then the remove call hangs, so the process dies after the dead letter
	// is stored and before either request is acknowledged.
	p.sim.SetOpLatency("remove", time.Minute)
	c := p.start("first")
	unknown := testSite(99)
	p.send("ann@contoso.com", event.Follow, unknown)
	p.send("ann@contoso.com", event.Unfollow, testSite(1))
	p.eventually("the dead letter", func() bool { return p.msgs("SITEFOLLOW_DLQ") == 1 })
	c.Kill()
	if err := c.Wait(time.Minute); err == nil {
		t.Fatal("exit: got status 0 after kill -9")
	}
	if got := p.msgs("SITEFOLLOW"); got != 2 {
		t.Fatalf("requests left after kill: got %d, want 2 (none acked)", got)
	}
	p.sim.SetOpLatency("remove", 0)
	c = p.start("second")
	p.eventually("redelivered requests to settle", func() bool { return p.msgs("SITEFOLLOW") == 0 })
	if got := p.msgs("SITEFOLLOW_DLQ"); got != 1 {
		t.Errorf("dead letters: got %d, want 1 (the redelivered failure is stored once)", got)
	}
	adds := 0
	for _, c := range p.sim.Calls() {
		if c.Op == "add" && c.Status == 207 {
			adds++
		}
	}
	if adds < 2 {
		t.Errorf("207 answers for the unknown site: got %d, want 2 (one per delivery)", adds)
	}
	if got := p.sim.Followed("ann@contoso.com"); len(got) != 0 {
		t.Errorf("ann followed: got %v, want none", got)
	}
	c.Term()
	if err := c.Wait(time.Minute); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

// TestReadme keeps the README's configuration table in step with the code.
func TestReadme(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range config.Settings() {
		if !bytes.Contains(readme, []byte("`"+s.Env+"`")) {
			t.Errorf("README lacks setting %s", s.Env)
		}
	}
	for _, cmd := range []string{"go run ./cmd/consumer demo", "go test -race ./..."} {
		if !bytes.Contains(readme, []byte(cmd)) {
			t.Errorf("README lacks command %q", cmd)
		}
	}
}
