package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// dlqWorld is an embedded server with the consumer's streams, and the
// environment the dlq tool gets: the NATS URL and nothing of Azure.
type dlqWorld struct {
	t   *testing.T
	js  jetstream.JetStream
	env map[string]string
}

func newDLQWorld(t *testing.T) *dlqWorld {
	t.Helper()
	n := testkit.StartNATS(t, testkit.NATSOptions{})
	_, js := testkit.Connect(t, n.URL())
	testkit.PrecreateStreams(t, js, testkit.Spec(t, nil), 1)
	return &dlqWorld{t: t, js: js, env: map[string]string{"NATS_URL": n.URL()}}
}

// run runs `consumer dlq args...` off a terminal and returns its stdout
// and stderr.
func (w *dlqWorld) run(args ...string) (string, string, error) {
	w.t.Helper()
	return w.runOn(console{in: strings.NewReader("")}, args...)
}

// runOn runs it on con, whose out and err are replaced by buffers.
func (w *dlqWorld) runOn(con console, args ...string) (string, string, error) {
	w.t.Helper()
	var out, errOut bytes.Buffer
	con.out, con.err = &out, &errOut
	err := dlqCommand(w.t.Context(), args, envFrom(w.env), con)
	return out.String(), errOut.String(), err
}

func (w *dlqWorld) mustRun(args ...string) string {
	w.t.Helper()
	out, errOut, err := w.run(args...)
	if err != nil {
		w.t.Fatalf("dlq %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, out, errOut)
	}
	return out
}

func (w *dlqWorld) seed(d event.DeadLetter) uint64 { return testkit.PublishDeadLetter(w.t, w.js, d) }

func (w *dlqWorld) left() []uint64 {
	var out []uint64
	for _, m := range testkit.DeadLetterMessages(w.t, w.js) {
		out = append(out, m.Sequence)
	}
	return out
}

func listLines(t *testing.T, out string) []listLine {
	t.Helper()
	var lines []listLine
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var ll listLine
		if err := json.Unmarshal([]byte(l), &ll); err != nil {
			t.Fatalf("list --json line %q: %v", l, err)
		}
		lines = append(lines, ll)
	}
	return lines
}

func TestDLQListAndShow(t *testing.T) {
	t.Parallel()
	w := newDLQWorld(t)
	replayed := testkit.SiteDeadLetter("alice@contoso.com", testkit.Site(1), "accessDenied", 1)
	replayed.Replays = 2
	a := w.seed(replayed)
	b := w.seed(testkit.SiteDeadLetter("bob\x1b[31m@contoso.com", testkit.Site(2), "itemNotFound", 2))
	c := w.seed(testkit.InvalidDeadLetter("{\"userId\": \"carol\", oops", 3))

	out := w.mustRun("list", "--json")
	lines := listLines(t, out)
	if len(lines) != 3 {
		t.Fatalf("list --json: got %d lines, want 3:\n%s", len(lines), out)
	}
	got := lines[0]
	if got.Seq != a || got.Code != "accessDenied" || got.UserID != "alice@contoso.com" || got.Action != event.Follow ||
		got.SiteID != testkit.Site(1) || got.Message != "Graph refused accessDenied" || got.Replays != 2 || got.Time == "" {
		t.Errorf("list --json first line: got %+v", got)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"seq", "time", "code", "userId", "action", "siteId", "message", "replays"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("list --json: no %q in %v", k, raw)
		}
	}
	if lines[2].Replays != 0 || lines[2].Code != event.CodeInvalidEvent {
		t.Errorf("list --json invalid event: got %+v, want replays 0, code invalidEvent", lines[2])
	}

	filters := []struct {
		args []string
		want []uint64
	}{
		{[]string{"--code", "itemnotfound"}, []uint64{b}},
		{[]string{"--user", "alice@contoso.com", "--site", testkit.Site(1)}, []uint64{a}},
		{[]string{"--user", "alice@contoso.com", "--code", "itemNotFound"}, nil},
		{[]string{"--since", "1h"}, []uint64{a, b, c}},
		{[]string{"--seq", "2-2"}, []uint64{b}},
		{[]string{"--limit", "1"}, []uint64{a}},
	}
	for _, f := range filters {
		var seqs []uint64
		for _, l := range listLines(t, w.mustRun(append([]string{"list", "--json"}, f.args...)...)) {
			seqs = append(seqs, l.Seq)
		}
		if !slices.Equal(seqs, f.want) {
			t.Errorf("list %v: got %v, want %v", f.args, seqs, f.want)
		}
	}

	table := w.mustRun("list")
	for _, want := range []string{"SEQ", "accessDenied", "itemNotFound", "invalidEvent", "bob_[31m@contoso.com", "CODE", "COUNT", "3 dead letters"} {
		if !strings.Contains(table, want) {
			t.Errorf("list table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "\x1b") {
		t.Errorf("list table carries a control character:\n%q", table)
	}

	shown := w.mustRun("show", "1")
	for _, want := range []string{"accessDenied", "replays", "event:", `"siteIds": [`, testkit.Site(1), "consumer dlq replay --seq 1-1"} {
		if !strings.Contains(shown, want) {
			t.Errorf("show 1 lacks %q:\n%s", want, shown)
		}
	}
	if shown := w.mustRun("show", "3"); !strings.Contains(shown, "rawPayload") || !strings.Contains(shown, `"userId": "carol", oops`) {
		t.Errorf("show 3: want the raw payload as text:\n%s", shown)
	}
	var js struct {
		Seq    uint64          `json:"seq"`
		Record json.RawMessage `json:"record"`
	}
	if err := json.Unmarshal([]byte(w.mustRun("show", "2", "--json")), &js); err != nil || js.Seq != 2 || !strings.Contains(string(js.Record), "itemNotFound") {
		t.Errorf("show 2 --json: got %+v, %v", js, err)
	}
	if _, _, err := w.run("show", "99"); err == nil || !strings.Contains(err.Error(), "no dead letter") {
		t.Errorf("show 99: got %v, want no dead letter", err)
	}
}

func TestDLQHelpAndErrors(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
		wantOut string
	}{
		{[]string{"dlq", "--help"}, flag.ErrHelp.Error(), "replay"},
		{[]string{"dlq", "replay", "--help"}, flag.ErrHelp.Error(), "--max-replays"},
		{[]string{"dlq", "list", "--help"}, flag.ErrHelp.Error(), "-nats-url"},
		{[]string{"dlq"}, "missing action", ""},
		{[]string{"dlq", "list", "--seq", "9-3"}, "--seq", ""},
		{[]string{"dlq", "purge", "--older-than", "soon"}, "--older-than", ""},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		err := dispatch(t.Context(), tt.args, envFrom(nil), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%v: got error %v, want one containing %q", tt.args, err, tt.wantErr)
		}
		if !strings.Contains(out.String(), tt.wantOut) {
			t.Errorf("%v: stdout lacks %q:\n%s", tt.args, tt.wantOut, out.String())
		}
	}
}

func TestDLQReplay(t *testing.T) {
	t.Parallel()
	w := newDLQWorld(t)
	a := w.seed(testkit.SiteDeadLetter("alice@contoso.com", testkit.Site(1), "accessDenied", 7))
	capped := testkit.SiteDeadLetter("bob@contoso.com", testkit.Site(2), "accessDenied", 8)
	capped.Replays = 3
	b := w.seed(capped)
	c := w.seed(testkit.InvalidDeadLetter("nope", 9))

	// Off a terminal without --yes: refused, nothing changed.
	_, _, err := w.run("replay")
	if err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("replay without --yes: got %v, want a refusal naming --yes", err)
	}
	// --dry-run changes nothing, even with --yes.
	out := w.mustRun("replay", "--dry-run", "--yes")
	if !strings.Contains(out, "would replay 1 dead letter") || !strings.Contains(out, "sitefollow-replay:") {
		t.Errorf("dry run output:\n%s", out)
	}
	if got := w.left(); !slices.Equal(got, []uint64{a, b, c}) || testkit.StreamMsgs(w.js, testkit.RequestStream) != 0 {
		t.Fatalf("after dry run and refusal: dead letters %v, requests %d; want all and none", got, testkit.StreamMsgs(w.js, testkit.RequestStream))
	}

	out = w.mustRun("replay", "--yes")
	for _, want := range []string{"replayed 1 of 1", "1 invalidEvent skipped", "1 refused at --max-replays 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("replay output lacks %q:\n%s", want, out)
		}
	}
	if got := w.left(); !slices.Equal(got, []uint64{b, c}) {
		t.Errorf("after replay: dead letters %v, want %v", got, []uint64{b, c})
	}
	msgs := testkit.StreamMessages(t, w.js, testkit.RequestStream)
	if len(msgs) != 1 {
		t.Fatalf("requests: got %d, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Subject != "sitefollow.requests.replay" || m.Header.Get("Sitefollow-Replay-Of") != "1" ||
		m.Header.Get("Sitefollow-Replay-Count") != "1" || !strings.HasPrefix(m.Header.Get("Nats-Msg-Id"), "sitefollow-replay:SITEFOLLOW_DLQ:") {
		t.Errorf("replayed request: subject %s, headers %v", m.Subject, m.Header)
	}
	req, err := event.Decoder{}.Decode(m.Data)
	if err != nil || req.UserID != "alice@contoso.com" || req.Action != event.Follow || !slices.Equal(req.SiteIDs, []string{testkit.Site(1)}) {
		t.Errorf("replayed request: got %+v, %v", req, err)
	}

	// The capped one on a terminal, confirmed, with --force.
	out, errOut, err := w.runOn(console{in: strings.NewReader("y\n"), terminal: true}, "replay", "--force", "--seq", "2-2")
	if err != nil || !strings.Contains(out, "[y/N]") || !strings.Contains(out, "replayed 1 of 1") {
		t.Fatalf("replay --force on a terminal: %v\n%s%s", err, out, errOut)
	}
	if got := testkit.StreamMessages(t, w.js, testkit.RequestStream); len(got) != 2 || got[1].Header.Get("Sitefollow-Replay-Count") != "4" {
		t.Errorf("forced replay: want a second request with Sitefollow-Replay-Count 4, got %d requests", len(got))
	}
	// Declined on a terminal: non-zero, nothing changed.
	if _, _, err := w.runOn(console{in: strings.NewReader("n\n"), terminal: true}, "purge"); err == nil {
		t.Errorf("purge declined: got nil error, want one")
	}
	if got := w.left(); !slices.Equal(got, []uint64{c}) {
		t.Errorf("after declined purge: dead letters %v, want %v", got, []uint64{c})
	}
}

func TestDLQPurge(t *testing.T) {
	t.Parallel()
	w := newDLQWorld(t)
	a := w.seed(testkit.SiteDeadLetter("alice@contoso.com", testkit.Site(1), "accessDenied", 1))
	b := w.seed(testkit.SiteDeadLetter("bob@contoso.com", testkit.Site(1), "itemNotFound", 2))
	if _, _, err := w.run("purge", "--older-than", "1ns"); err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Errorf("purge without --yes: got %v, want a refusal naming --yes", err)
	}
	if out := w.mustRun("purge", "--older-than", "1h", "--yes"); !strings.Contains(out, "nothing to purge") {
		t.Errorf("purge --older-than 1h: want nothing to purge:\n%s", out)
	}
	if out := w.mustRun("purge", "--older-than", "1ns", "--code", "itemNotFound", "--yes"); !strings.Contains(out, "deleted 1 of 1") {
		t.Errorf("purge --older-than 1ns --code itemNotFound:\n%s", out)
	}
	if got := w.left(); !slices.Equal(got, []uint64{a}) {
		t.Errorf("after purge: dead letters %v, want %v (not %d)", got, []uint64{a}, b)
	}
}

// TestReplayedRequestFailsAgain runs the real consumer: a replayed request
// that fails again is dead-lettered with its replay count, the cap then
// refuses it, and --force replays it once the cause is gone.
func TestReplayedRequestFailsAgain(t *testing.T) {
	t.Parallel()
	w := newDLQWorld(t)
	sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testkit.Site(1), testkit.Site(2)}})
	serveInProcess(t, simSettings(t, w.env["NATS_URL"], sim), true)
	sim.FailSite(testkit.Site(1), "accessDenied", 2)
	user := testkit.User(1)
	testkit.Publish(t, w.js, user, event.Follow, testkit.Site(1))

	letter := func(replays int) []listLine {
		var got []listLine
		testkit.Eventually(t, 2*time.Minute, "a dead letter with replays "+strconv.Itoa(replays), func() bool {
			got = listLines(t, w.mustRun("list", "--json"))
			return len(got) == 1 && got[0].Replays == replays
		})
		return got
	}
	first := letter(0)
	w.mustRun("replay", "--yes")
	again := letter(1)
	if again[0].Seq == first[0].Seq || again[0].Code != "accessDenied" {
		t.Errorf("failed again: got %+v, want a new accessDenied record", again[0])
	}
	if out := w.mustRun("replay", "--yes", "--max-replays", "1"); !strings.Contains(out, "1 refused at --max-replays 1") {
		t.Errorf("capped replay:\n%s", out)
	}
	w.mustRun("replay", "--yes", "--max-replays", "1", "--force")
	testkit.Eventually(t, 2*time.Minute, "the forced replay to be applied", func() bool {
		return slices.Contains(sim.Followed(user), strings.ToLower(testkit.Site(1))) || slices.Contains(sim.Followed(user), testkit.Site(1))
	})
	if got := w.left(); len(got) != 0 {
		t.Errorf("dead letters after the forced replay: got %v, want none", got)
	}
}
