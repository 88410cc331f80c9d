package handler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/handler"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// rawLetter is a dead letter as stored: subject, headers and body bytes.
type rawLetter struct {
	subject string
	headers map[string][]string
	body    []byte
	d       event.DeadLetter
}

// rawLetters reads every stored dead letter without decoding it first.
func (e *env) rawLetters() []rawLetter {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, dlqStream)
	if err != nil {
		e.t.Fatalf("dead-letter stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatalf("dead-letter stream: %v", err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatalf("dead letters: %v", err)
	}
	var out []rawLetter
	for uint64(len(out)) < info.State.Msgs {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			e.t.Fatalf("dead letters: %v", err)
		}
		d, err := event.DecodeDeadLetter(m.Data())
		if err != nil {
			e.t.Errorf("dead letter on %s does not decode: %v", m.Subject(), err)
		}
		out = append(out, rawLetter{subject: m.Subject(), headers: m.Headers(), body: m.Data(), d: d})
	}
	return out
}

// checkClean fails unless every dead letter is valid UTF-8 JSON and no
// header value carries control, bidi or invalid characters.
func checkClean(t *testing.T, letters []rawLetter) {
	t.Helper()
	for _, l := range letters {
		if !utf8.Valid(l.body) || !json.Valid(l.body) {
			t.Errorf("dead letter on %s: body is not valid UTF-8 JSON", l.subject)
		}
		for k, vs := range l.headers {
			for _, v := range vs {
				for _, r := range v {
					if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
						t.Errorf("dead letter on %s: header %s carries %U", l.subject, k, r)
					}
				}
				if len(v) > 1024 {
					t.Errorf("dead letter on %s: header %s is %d bytes, want at most 1024", l.subject, k, len(v))
				}
			}
		}
	}
}

// TestHostileInputStillDeadLetters sends events and Graph answers that once
// made a dead letter unstorable (so the request was NAKed until JetStream
// stopped delivering it): every one must now be dead-lettered and
// acknowledged, with a clean, bounded dead letter.
func TestHostileInputStillDeadLetters(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *handler.Config) { c.EventMaxBytes = 2 << 20 }))
	maxPayload := int(e.nc.MaxPayload())
	huge := strings.Repeat("a", 70<<10)
	tests := []struct {
		name     string
		body     string // published as is, when set
		fail     func() // sets up a hostile Graph answer, with user and site
		user     string // for fail: the request's user
		site     string // for fail: the request's site
		wantCode string // the dead letter's code
		wantSubj string // its subject's last token
		check    func(event.DeadLetter) error
	}{
		{name: "userId over 64 KiB", body: `{"userId":"` + huge + `","action":"follow","siteIds":["` + site(1) + `"]}`,
			wantCode: event.CodeInvalidEvent, wantSubj: event.CodeInvalidEvent},
		{name: "action over 64 KiB with CR, LF and bidi controls", body: `{"userId":"ann@contoso.com","action":"\u202e\r\n` + huge + `","siteIds":["` + site(1) + `"]}`,
			wantCode: event.CodeInvalidEvent, wantSubj: event.CodeInvalidEvent},
		{name: "event within 64 bytes of max_payload", body: padded(`{"userId":"ann@contoso.com","action":"follow","pad":"`, `"}`, maxPayload-64),
			wantCode: event.CodeInvalidEvent, wantSubj: event.CodeInvalidEvent},
		{name: "non-object payload over 700 KB", body: strings.Repeat("x", 750<<10),
			wantCode: event.CodeInvalidEvent, wantSubj: event.CodeInvalidEvent},
		{name: "object in invalid UTF-8", body: "{\"userId\":\"\xff\xfe\",\"action\":\"follow\"}",
			wantCode: event.CodeInvalidEvent, wantSubj: event.CodeInvalidEvent},
		// A 2 MiB message makes the whole answer longer than any batch can
		// need: graphclient refuses to read it (invalidResponse, retried;
		// see TestAnswerLongerThanTheBound). The longest message an answer
		// may carry (the simulator repeats it in innerError) still has to fit a
		// dead letter.
		{name: "207 error message of 100 KiB", user: "msg@contoso.com", site: site(7),
			fail:     func() { e.sim.FailSiteWith(site(7), "accessDenied", strings.Repeat("m", 100<<10), 1) },
			wantCode: "accessDenied", wantSubj: "accessDenied",
			check: func(d event.DeadLetter) error {
				if d.Truncated["error.message"] != 100<<10 {
					return fmt.Errorf("truncated: got %v, want error.message: %d", d.Truncated, 100<<10)
				}
				return nil
			}},
		{name: "207 error without a code", user: "nocode@contoso.com", site: site(8),
			fail:     func() { e.sim.FailSiteWith(site(8), "", "no code given", 1) },
			wantCode: event.CodeUnspecified, wantSubj: event.CodeUnspecified},
		{name: "207 error code of 4 KB", user: "longcode@contoso.com", site: site(9),
			fail:     func() { e.sim.FailSiteWith(site(9), strings.Repeat("c", 4096), "", 1) },
			wantCode: event.Truncate(strings.Repeat("c", 4096), event.MaxTextBytes), wantSubj: dlq.CodeOther},
	}
	for _, tt := range tests {
		if tt.fail != nil {
			tt.fail()
			e.send(tt.user, event.Follow, tt.site)
			continue
		}
		e.publish("sitefollow.requests.app", tt.body)
	}
	e.settled()
	letters := e.rawLetters()
	checkClean(t, letters)
	if len(letters) != len(tests) {
		t.Fatalf("dead letters: got %d, want %d", len(letters), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			found := false
			for _, l := range letters {
				if (tt.fail != nil) != (l.d.SiteID != "") || tt.fail != nil && l.d.SiteID != tt.site {
					continue
				}
				if tt.fail == nil && l.d.Origin.Sequence != uint64(indexOf(tests, tt.name)+1) {
					continue
				}
				found = true
				if l.d.Error.Code != tt.wantCode {
					t.Errorf("code: got %.40q (%d bytes), want %.40q", l.d.Error.Code, len(l.d.Error.Code), tt.wantCode)
				}
				if want := dlqPrefix + "." + tt.wantSubj; l.subject != want {
					t.Errorf("subject: got %.60q, want %q", l.subject, want)
				}
				if len(l.body) > maxPayload-4096 {
					t.Errorf("body: got %d bytes, want at most %d", len(l.body), maxPayload-4096)
				}
				if tt.check != nil {
					if err := tt.check(l.d); err != nil {
						t.Error(err)
					}
				}
			}
			if !found {
				t.Errorf("no dead letter for %s", tt.name)
			}
		})
	}
}

func indexOf[T any](list []T, name string) int {
	for i, x := range list {
		if strings.Contains(fmt.Sprintf("%+v", x), "name:"+name+" ") {
			return i
		}
	}
	return -1
}

// padded is prefix + padding + suffix, n bytes in all.
func padded(prefix, suffix string, n int) string {
	return prefix + strings.Repeat("p", n-len(prefix)-len(suffix)) + suffix
}

// TestUnstorableDeadLetterStaysRedeliverable: while a dead letter cannot be
// stored, its request is delivered again and again, past the delivery
// limit, counted as stranded; once the dead-letter stream takes it again,
// it is stored and the request acknowledged.
func TestUnstorableDeadLetterStaysRedeliverable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		break_ func(e *env)
		fix    func(e *env)
	}{
		{"dead-letter stream full, discard new", func(e *env) {
			e.updateDLQ(func(c *jetstream.StreamConfig) { c.MaxMsgs = 1; c.Discard = jetstream.DiscardNew })
			e.publish(dlqPrefix+".filler", "{}")
		}, func(e *env) {
			e.updateDLQ(func(c *jetstream.StreamConfig) { c.MaxMsgs = -1 })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			metrics := handler.NewMetrics(prometheus.NewRegistry())
			e := newEnv(t, withMetrics(metrics), withConfig(func(c *handler.Config) {
				c.MaxDeliver = 2
				c.NakMaxDelay = 200 * time.Millisecond
			}))
			acks := testkit.WatchAcks(t, e.nc, stream, "sitefollow")
			tt.break_(e)
			e.send("ann@contoso.com", event.Follow, unknownSite)
			e.publish("sitefollow.requests.app", "not json")
			e.eventually("deliveries past the limit of 2", func() bool { return acks.Delivered(1) > 3 && acks.Delivered(2) > 3 })
			if got := metrics.Stranded(); got == 0 {
				t.Errorf("stranded requests: got %d, want more than 0", got)
			}
			tt.fix(e)
			e.settled()
			if got := e.streamMsgs(dlqStream); got != 3 {
				t.Errorf("dead-letter stream: got %d messages, want the filler and the 2 requests' dead letters", got)
			}
			e.eventually("no stranded requests", func() bool { return metrics.Stranded() == 0 })
		})
	}
}

// TestDeletedDeadLetterStreamIsRecreated: a dead-letter stream deleted while
// running is re-created on the next dead letter, which is stored.
func TestDeletedDeadLetterStreamIsRecreated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Once the handler pulls it has provisioned; what it finds missing
	// from then on was deleted while it ran.
	testkit.WaitPulling(t, e.js, 1)
	if err := e.js.DeleteStream(t.Context(), dlqStream); err != nil {
		t.Fatalf("delete dead-letter stream: %v", err)
	}
	e.send("ann@contoso.com", event.Follow, unknownSite)
	e.settled()
	if got := len(e.deadLetters()); got != 1 {
		t.Errorf("dead letters: got %d, want 1", got)
	}
}

func (e *env) updateDLQ(f func(*jetstream.StreamConfig)) {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), dlqStream)
	if err != nil {
		e.t.Fatalf("dead-letter stream: %v", err)
	}
	cfg := s.CachedInfo().Config
	f(&cfg)
	if _, err := e.js.UpdateStream(context.Background(), cfg); err != nil {
		e.t.Fatalf("update dead-letter stream: %v", err)
	}
}

// TestDeadLettersAfterRequestStreamRecreated: a re-created request stream
// restarts its sequences at 1; its failures must not be dropped as
// duplicates of the old stream's dead letters.
func TestDeadLettersAfterRequestStreamRecreated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.send("ann@contoso.com", event.Follow, unknownSite)
	e.settled()
	if err := e.js.DeleteStream(t.Context(), stream); err != nil {
		t.Fatalf("delete request stream: %v", err)
	}
	// The handler re-provisions the stream when its consumer is gone.
	e.eventually("the request stream back", func() bool { return e.streamMsgs(stream) == 0 })
	e.eventually("a request published to the new stream", func() bool {
		_, err := e.js.Publish(t.Context(), "sitefollow.requests.app", []byte(request("ann@contoso.com", event.Follow, unknownSite)))
		return err == nil
	})
	e.settled()
	letters := e.deadLetters()
	if len(letters) != 2 {
		t.Fatalf("dead letters: got %d, want 2 (one per request, same sequence in two incarnations)", len(letters))
	}
	if letters[0].MsgID == letters[1].MsgID {
		t.Errorf("Nats-Msg-Id: both %q, want one per request message", letters[0].MsgID)
	}
}

// TestPerSiteDeadLettersCarryOnlyTheirSite: one 900 KB event naming 100
// rejected sites yields 100 dead letters totalling at most 3× the event.
func TestPerSiteDeadLettersCarryOnlyTheirSite(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *handler.Config) { c.EventMaxBytes = 1 << 20 }))
	sites := make([]string, 100)
	for i := range sites {
		sites[i] = site(1000 + i) // unknown to the simulator: invalidRequest
	}
	ids, err := json.Marshal(sites)
	if err != nil {
		t.Fatal(err)
	}
	body := padded(`{"userId":"ann@contoso.com","action":"follow","id":"big-1","siteIds":`+string(ids)+`,"note":"`, `"}`, 900_000)
	e.publish("sitefollow.requests.app", body)
	e.settled()
	letters := e.rawLetters()
	checkClean(t, letters)
	if len(letters) != len(sites) {
		t.Fatalf("dead letters: got %d, want %d", len(letters), len(sites))
	}
	total := 0
	for _, l := range letters {
		total += len(l.body)
		var req event.Request
		if err := json.Unmarshal(l.d.Event, &req); err != nil {
			t.Fatalf("dead letter event: %v", err)
		}
		if !l.d.Narrowed || len(req.SiteIDs) != 1 || req.SiteIDs[0] != l.d.SiteID || req.ID != "big-1" {
			t.Errorf("dead letter for %s: got narrowed %v, event %s, want the event narrowed to its site", l.d.SiteID, l.d.Narrowed, l.d.Event)
		}
	}
	if total > 3*len(body) {
		t.Errorf("dead letters total: got %d bytes, want at most %d (3× the event)", total, 3*len(body))
	}
	t.Logf("one %d-byte event, 100 dead letters of %d bytes in all (%.3f×)", len(body), total, float64(total)/float64(len(body)))
}

// TestUnknownCodesFoldIntoOne: 100 distinct codes Graph made up give at
// most 10 subjects and metric series; the full code stays in the body.
func TestUnknownCodesFoldIntoOne(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := newEnv(t, withMetrics(handler.NewMetrics(reg)))
	for i := range 100 {
		e.sim.FailSite(site(i), fmt.Sprintf("madeUpCode%03d", i), 1)
	}
	for i := range 100 {
		e.send(testkit.User(i), event.Follow, site(i))
	}
	e.settled()
	letters := e.rawLetters()
	subjects := map[string]bool{}
	codes := map[string]bool{}
	for _, l := range letters {
		subjects[l.subject] = true
		codes[l.d.Error.Code] = true
	}
	if len(letters) != 100 || len(codes) != 100 {
		t.Errorf("dead letters: got %d with %d distinct codes, want 100 and 100", len(letters), len(codes))
	}
	if len(subjects) > 10 {
		t.Errorf("subjects: got %d, want at most 10", len(subjects))
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "sitefollow_dead_letters_total" && len(f.GetMetric()) > 10 {
			t.Errorf("sitefollow_dead_letters_total: got %d series, want at most 10", len(f.GetMetric()))
		}
	}
}

// TestOversizedEventIsDeadLetteredUnparsed: an event over EventMaxBytes is
// dead-lettered as invalidEvent with only the beginning of its payload.
func TestOversizedEventIsDeadLetteredUnparsed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := padded(`{"userId":"ann@contoso.com","action":"follow","siteIds":["`+site(1)+`"],"note":"`, `"}`, handler.DefaultEventMaxBytes+1)
	e.publish("sitefollow.requests.app", body)
	e.settled()
	letters := e.deadLetters()
	if len(letters) != 1 {
		t.Fatalf("dead letters: got %d, want 1", len(letters))
	}
	d := letters[0]
	if d.Error.Code != event.CodeInvalidEvent || d.Truncated["rawPayload"] != len(body) || len(d.RawPayload) > event.MaxPayloadBytes {
		t.Errorf("dead letter: got code %q, truncated %v, %d payload bytes; want invalidEvent, rawPayload: %d, at most %d",
			d.Error.Code, d.Truncated, len(d.RawPayload), len(body), event.MaxPayloadBytes)
	}
	if n := e.sim.CallCount(); n != 0 {
		t.Errorf("graph calls: got %d, want 0", n)
	}
}

func TestAnswerTooLongToReadStillEndsInADeadLetter(t *testing.T) {
	// Graph keeps answering with a 2 MiB error message: more than any batch
	// can need, so the answer is never read, and the site must still end in
	// a dead letter once its deliveries are used up, not stay stranded.
	e := newEnv(t, withConfig(func(c *handler.Config) { c.MaxDeliver = 2 }))
	e.sim.FailSiteWith(site(7), "accessDenied", strings.Repeat("m", 2<<20), 1000)
	e.send("ann@contoso.com", event.Follow, site(7))
	e.settled()
	letters := e.deadLetters()
	if len(letters) != 1 || letters[0].Error.Code != event.CodeRetriesExhausted || letters[0].SiteID != site(7) {
		t.Fatalf("dead letters: got %+v, want one retriesExhausted for site 7", letters)
	}
	if got := e.followed("ann@contoso.com"); len(got) != 0 {
		t.Errorf("followed: got %v, want none", got)
	}
}
