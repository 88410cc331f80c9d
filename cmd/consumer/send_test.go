package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/producer"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// send runs `consumer send args` against natsURL and returns its stdout.
func send(t *testing.T, natsURL string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := dispatch(t.Context(), append([]string{"send"}, args...), envFrom(map[string]string{"NATS_URL": natsURL}), &out, &errOut)
	if errOut.Len() > 0 {
		t.Errorf("send wrote to stderr: %s", errOut.String())
	}
	return out.String(), err
}

// streamMsg reads one message of the request stream.
func streamMsg(t *testing.T, js jetstream.JetStream, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, testkit.RequestStream)
	if err != nil {
		t.Fatalf("request stream: %v", err)
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		t.Fatalf("request %d: %v", seq, err)
	}
	return m
}

func TestSendRefusesInvalidInput(t *testing.T) {
	t.Parallel()
	// Nothing listens here: invalid input is refused before connecting.
	const nowhere = "nats://127.0.0.1:1"
	site := testkit.Site(1)
	tests := []struct {
		name string
		args []string
		want []string // substrings of the error
	}{
		{name: "missing user", args: []string{"--follow", site}, want: []string{"--user is required"}},
		{name: "both actions", args: []string{"--user", "a@contoso.com", "--follow", site, "--unfollow", site}, want: []string{"not both"}},
		{name: "no action", args: []string{"--user", "a@contoso.com"}, want: []string{"--follow SITE... or --unfollow SITE..."}},
		{name: "every problem at once", args: []string{"--source", "a.b"}, want: []string{"--user is required", "--unfollow SITE", "--source"}},
		{name: "bad site id", args: []string{"--user", "a@contoso.com", "--follow", site, "contoso.sharepoint.com,nope"}, want: []string{"invalid event", "siteIds[1]"}},
		{name: "bad user", args: []string{"--user", "../admin", "--follow", site}, want: []string{"invalid event", "userId"}},
		{name: "source with a dot", args: []string{"--user", "a@contoso.com", "--follow", site, "--source", "hr.x"}, want: []string{"--source", "invalid source", "one subject token"}},
		{name: "wildcard source", args: []string{"--user", "a@contoso.com", "--follow", site, "--source", ">"}, want: []string{"--source", "invalid source"}},
		{name: "empty source", args: []string{"--user", "a@contoso.com", "--follow", site, "--source", ""}, want: []string{"--source", "must not be empty"}},
		{name: "long source", args: []string{"--user", "a@contoso.com", "--follow", site, "--source", strings.Repeat("s", 65)}, want: []string{"--source", "longer than 64"}},
		{name: "id with a newline", args: []string{"--user", "a@contoso.com", "--follow", site, "--id", "a\r\nb"}, want: []string{"--id", "control characters"}},
		{name: "site left out", args: []string{"--follow", "--user", "a@contoso.com"}, want: []string{"want a site id"}},
		{name: "stray argument", args: []string{"--user", "a@contoso.com", "stray", "--follow", site}, want: []string{`unexpected argument "stray"`}},
		{name: "sites after another flag", args: []string{"--follow", site, "--user", "a@contoso.com", testkit.Site(2)}, want: []string{"unexpected argument"}},
		{name: "unknown flag", args: []string{"--user", "a@contoso.com", "--follow", site, "--nope"}, want: []string{"nope"}},
		{name: "bad nats url", args: []string{"--user", "a@contoso.com", "--follow", site, "--nats-url", "http://x"}, want: []string{"--nats-url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := send(t, nowhere, tt.args...)
			if err == nil {
				t.Fatalf("send %q: got no error (output %q), want one containing %q", tt.args, out, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("send %q: got error %q, want it to contain %q", tt.args, err, w)
				}
			}
			if out != "" {
				t.Errorf("stdout: got %q, want nothing", out)
			}
		})
	}
}

func TestParseSites(t *testing.T) {
	t.Parallel()
	s1, s2, s3 := testkit.Site(1), testkit.Site(2), testkit.Site(3)
	tests := []struct {
		name         string
		args         []string
		wantFollow   []string
		wantUnfollow []string
		wantUser     string
	}{
		{name: "several after one flag", args: []string{"--user", "u", "--follow", s1, s2, s3}, wantFollow: []string{s1, s2, s3}, wantUser: "u"},
		{name: "repeated flag", args: []string{"--follow", s1, "--follow", s2, "--user", "u"}, wantFollow: []string{s1, s2}, wantUser: "u"},
		{name: "mixed", args: []string{"--follow=" + s1, s2, "--user=u", "--follow", s3}, wantFollow: []string{s1, s2, s3}, wantUser: "u"},
		{name: "flags between lists", args: []string{"--unfollow", s1, s2, "--user", "u", "--follow", s3}, wantFollow: []string{s3}, wantUnfollow: []string{s1, s2}, wantUser: "u"},
		{name: "single dash flags", args: []string{"-follow", s1, s2, "-user", "u"}, wantFollow: []string{s1, s2}, wantUser: "u"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("send", flag.ContinueOnError)
			user := fs.String("user", "", "")
			var follow, unfollow siteList
			fs.Var(&follow, "follow", "")
			fs.Var(&unfollow, "unfollow", "")
			if err := parseSites(fs, tt.args, map[string]*siteList{"follow": &follow, "unfollow": &unfollow}); err != nil {
				t.Fatalf("parseSites(%q): %v", tt.args, err)
			}
			if !slices.Equal(follow, tt.wantFollow) || !slices.Equal(unfollow, tt.wantUnfollow) || *user != tt.wantUser {
				t.Errorf("parseSites(%q): got follow %q unfollow %q user %q, want %q %q %q",
					tt.args, follow, unfollow, *user, tt.wantFollow, tt.wantUnfollow, tt.wantUser)
			}
		})
	}
}

func TestSendPublishes(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATS(t, testkit.NATSOptions{})
	_, js := testkit.Connect(t, ns.URL())
	testkit.PrecreateStreams(t, js, testkit.Spec(t, nil), 1)
	s1, s2 := testkit.Site(1), testkit.Site(2)

	out, err := send(t, ns.URL(), "--user", "adele@contoso.com", "--follow", s1, s2)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if want := "stream SITEFOLLOW sequence 1"; !strings.Contains(out, want) {
		t.Errorf("output: got %q, want it to contain %q", out, want)
	}
	m := streamMsg(t, js, 1)
	if m.Subject != "sitefollow.requests.app" {
		t.Errorf("subject: got %q, want sitefollow.requests.app", m.Subject)
	}
	req, err := event.Decoder{}.Decode(m.Data)
	if err != nil {
		t.Fatalf("the consumer's decoder refuses %s: %v", m.Data, err)
	}
	want := event.Request{UserID: "adele@contoso.com", Action: event.Follow, SiteIDs: []string{s1, s2}, Source: "app"}
	if !equalRequest(req, want) {
		t.Errorf("request: got %+v, want %+v", req, want)
	}
	msgID := m.Header.Get(jetstream.MsgIDHeader)
	if msgID != producer.MsgID(m.Data) {
		t.Errorf("Nats-Msg-Id: got %q, want %q (derived from the body)", msgID, producer.MsgID(m.Data))
	}
	if !strings.Contains(out, msgID) {
		t.Errorf("output %q does not name the Nats-Msg-Id %q", out, msgID)
	}

	// The same request written the other way carries the same Nats-Msg-Id,
	// so the stream drops it and says which sequence holds it.
	out, err = send(t, ns.URL(), "--follow", s1, "--user", "adele@contoso.com", "--follow", s2)
	if err != nil {
		t.Fatalf("send again: %v", err)
	}
	for _, w := range []string{"duplicate", "sequence 1", msgID} {
		if !strings.Contains(out, w) {
			t.Errorf("second send output: got %q, want it to contain %q", out, w)
		}
	}
	if n := testkit.StreamMsgs(js, testkit.RequestStream); n != 1 {
		t.Errorf("request stream: got %d messages, want 1", n)
	}

	// --id and --source: the id is the Nats-Msg-Id and the request's id.
	out, err = send(t, ns.URL(), "--user", "2f1c9a4e-8d3b-4c7a-9e21-5b6d7f8a9c0d", "--unfollow", s2, "--source", "hr", "--id", "hr-leaver-7")
	if err != nil {
		t.Fatalf("send with --id: %v", err)
	}
	if want := "sequence 2"; !strings.Contains(out, want) {
		t.Errorf("output: got %q, want it to contain %q", out, want)
	}
	m = streamMsg(t, js, 2)
	if m.Subject != "sitefollow.requests.hr" || m.Header.Get(jetstream.MsgIDHeader) != "hr-leaver-7" {
		t.Errorf("got subject %q Nats-Msg-Id %q, want sitefollow.requests.hr and hr-leaver-7", m.Subject, m.Header.Get(jetstream.MsgIDHeader))
	}
	var body map[string]any
	if err := json.Unmarshal(m.Data, &body); err != nil {
		t.Fatalf("body %s: %v", m.Data, err)
	}
	if body["id"] != "hr-leaver-7" || body["action"] != "unfollow" || body["source"] != "hr" {
		t.Errorf("body: got %s, want id hr-leaver-7, action unfollow, source hr", m.Data)
	}
}

func equalRequest(a, b event.Request) bool {
	return a.UserID == b.UserID && a.Action == b.Action && slices.Equal(a.SiteIDs, b.SiteIDs) &&
		a.ID == b.ID && a.Source == b.Source && a.OccurredAt == b.OccurredAt
}

func TestSendWithoutStreams(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATS(t, testkit.NATSOptions{})
	out, err := send(t, ns.URL(), "--user", "adele@contoso.com", "--follow", testkit.Site(1))
	if !errors.Is(err, producer.ErrNoStream) {
		t.Fatalf("send: got error %v, want producer.ErrNoStream", err)
	}
	for _, w := range []string{"sitefollow.requests.app", "may not exist yet", "consumer run"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error: got %q, want it to contain %q", err, w)
		}
	}
	if out != "" {
		t.Errorf("stdout: got %q, want nothing", out)
	}
}

func TestSendAndSimHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cmd  string
		want []string
	}{
		{cmd: "send", want: []string{"usage: consumer send", "-follow", "-unfollow", "-source", "-id", "-nats-url", `(default "app")`}},
		{cmd: "sim", want: []string{"usage: consumer sim", "-env-file", "-budget", "-throttle-rate", "-error-rate", "-site-failure-rate", "-latency", "-addr"}},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			err := dispatch(t.Context(), []string{tt.cmd, "--help"}, envFrom(nil), &out, &errOut)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("%s --help: got error %v, want flag.ErrHelp", tt.cmd, err)
			}
			if exitCode(err) != 0 {
				t.Errorf("exit code: got %d, want 0", exitCode(err))
			}
			if errOut.Len() > 0 {
				t.Errorf("stderr: got %q, want nothing (help goes to stdout)", errOut.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("help lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Contains(out.String(), "panic") {
				t.Errorf("help reports a panic:\n%s", out.String())
			}
		})
	}
}
