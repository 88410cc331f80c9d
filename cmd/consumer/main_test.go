package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/natsembed"
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
		{name: "version", args: []string{"version"}, wantOut: []string{"sitefollow dev"}},
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
			all := out.String() + errOut.String()
			for _, w := range tt.wantOut {
				if !strings.Contains(all, w) {
					t.Errorf("output lacks %q:\n%s", w, all)
				}
			}
		})
	}
}

func TestDemo(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := dispatch(t.Context(), []string{"demo"}, envFrom(map[string]string{"SITEFOLLOW_LOG_LEVEL": "warn"}), &out, &errOut); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	summary := out.String()
	for _, want := range []string{"events published", "Graph calls", "sites per call", "invalidEvent", "invalidRequest",
		"(0 left in SITEFOLLOW)", "alice@contoso.com"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
}

// proc is the consumer running as a child process against an embedded NATS
// server and the simulator in this process.
type proc struct {
	t    *testing.T
	ns   *server.Server
	sim  *graphsim.Server
	js   jetstream.JetStream
	env  []string
	cmd  *exec.Cmd
	logs interface {
		io.Writer
		String() string
	}
	exit chan error
}

func newProc(t *testing.T, settings map[string]string) *proc {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	sim, err := graphsim.New(graphsim.Options{Sites: []string{testSite(1), testSite(2), testSite(3)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, sim.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	js := jsFor(t, ns.ClientURL())
	env := append(os.Environ(),
		"SITEFOLLOW_TEST_MAIN=1",
		"NATS_URL="+ns.ClientURL(),
		"SITEFOLLOW_GRAPH_URL="+sim.GraphURL(),
		"AZURE_AUTHORITY_HOST="+sim.AuthorityURL(),
		"AZURE_TENANT_ID="+sim.TenantID(),
		"AZURE_CLIENT_ID="+sim.ClientID(),
		"AZURE_CLIENT_SECRET="+sim.ClientSecret(),
		"SITEFOLLOW_CA_FILE="+ca,
		"SITEFOLLOW_HTTP_ADDR=127.0.0.1:0",
		"SITEFOLLOW_LOG_LEVEL=debug",
	)
	for k, v := range settings {
		env = append(env, k+"="+v)
	}
	return &proc{t: t, ns: ns, sim: sim, js: js, env: env}
}

func jsFor(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func testSite(n int) string {
	return fmt.Sprintf("contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-%012d,712a596e-90a1-49e3-9b48-bfa80bee8740", n)
}

func (p *proc) start() {
	p.t.Helper()
	logs := new(bytes.Buffer)
	p.logs = logs
	p.cmd = exec.Command(os.Args[0], "run")
	p.cmd.Env = p.env
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.exit = make(chan error, 1)
	go func() { p.exit <- p.cmd.Wait() }()
	p.t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
				p.t.Logf("kill: %v", err)
			}
		}
	})
	p.eventually("the consumer to provision its streams", func() bool {
		_, err := p.js.Consumer(context.Background(), "SITEFOLLOW", "sitefollow")
		return err == nil
	})
}

func (p *proc) wait() error {
	p.t.Helper()
	select {
	case err := <-p.exit:
		return err
	case <-time.After(60 * time.Second):
		p.t.Fatalf("consumer did not exit; logs:\n%s", p.logs.String())
		return nil
	}
}

func (p *proc) eventually(what string, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out waiting for %s; logs:\n%s", what, p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) msgs(stream string) uint64 {
	s, err := p.js.Stream(context.Background(), stream)
	if err != nil {
		return ^uint64(0)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		return ^uint64(0)
	}
	return info.State.Msgs
}

func (p *proc) send(user string, action event.Action, sites ...string) {
	p.t.Helper()
	b, err := json.Marshal(event.Request{UserID: user, Action: action, SiteIDs: sites})
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.js.Publish(context.Background(), "sitefollow.requests.app", b); err != nil {
		p.t.Fatal(err)
	}
}

func TestSIGTERMMidBatchLosesNothing(t *testing.T) {
	p := newProc(t, map[string]string{"SITEFOLLOW_BATCH_LINGER": "5s", "SITEFOLLOW_SHUTDOWN_TIMEOUT": "30s"})
	p.sim.SetLatency(time.Second)
	p.start()
	p.send("ann@contoso.com", event.Follow, testSite(1), testSite(2))
	p.send("bob@contoso.com", event.Follow, testSite(3))
	p.eventually("messages delivered and held", func() bool {
		c, err := p.js.Consumer(context.Background(), "SITEFOLLOW", "sitefollow")
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 2
	})
	// Linger is 5s, so the batches are pending, not yet sent: SIGTERM must
	// flush them, wait for Graph and ack.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(); err != nil {
		t.Fatalf("exit: got %v, want status 0; logs:\n%s", err, p.logs.String())
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
}

func TestKill9MidBatchLosesNothingAndDeadLettersOnce(t *testing.T) {
	// The killed process keeps its users' leases for their TTL: keep it short.
	p := newProc(t, map[string]string{"SITEFOLLOW_BATCH_LINGER": "200ms", "SITEFOLLOW_ACK_WAIT": "5s",
		"SITEFOLLOW_GRAPH_TIMEOUT": "5s", "SITEFOLLOW_LEASE_TTL": "15s"})
	p.sim.SetFollowed("ann@contoso.com", testSite(1))
	// One batch for ann: the add call dead-letters an unknown site at once,
	// then the remove call hangs, so the process dies after the dead letter
	// is stored and before either request is acknowledged.
	p.sim.SetOpLatency("remove", time.Minute)
	p.start()
	unknown := testSite(99)
	p.send("ann@contoso.com", event.Follow, unknown)
	p.send("ann@contoso.com", event.Unfollow, testSite(1))
	p.eventually("the dead letter", func() bool { return p.msgs("SITEFOLLOW_DLQ") == 1 })
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(); err == nil {
		t.Fatal("exit: got status 0 after kill -9")
	}
	if got := p.msgs("SITEFOLLOW"); got != 2 {
		t.Fatalf("requests left after kill: got %d, want 2 (none acked)", got)
	}
	p.sim.SetOpLatency("remove", 0)
	p.start()
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
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(); err != nil {
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
