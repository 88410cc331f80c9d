package handler_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphclient"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/handler"
	"github.com/sitefollow/sitefollow/internal/ledger"
)

func TestBatchesAcrossEventsOfOneUser(t *testing.T) {
	e := newEnv(t, withConfig(func(c *handler.Config) { c.BatchLinger = time.Second }))
	sites := sitesUpTo(12)
	for _, s := range sites {
		e.send("ann@contoso.com", event.Follow, s)
	}
	e.settled()
	calls := e.sim.Calls()
	if len(calls) != 1 {
		t.Fatalf("graph calls: got %d, want 1 for 12 one-site events", len(calls))
	}
	if got := len(calls[0].SiteIDs); got != 12 {
		t.Errorf("sites in the call: got %d, want 12", got)
	}
	if got, want := e.followed("ann@contoso.com"), sorted(sites...); !slices.Equal(got, want) {
		t.Errorf("followed: got %v, want %v", got, want)
	}
}

func TestBatchFlushesAtMaxSites(t *testing.T) {
	e := newEnv(t, withConfig(func(c *handler.Config) { c.BatchMaxSites = 5; c.BatchLinger = time.Hour }))
	e.send("ann@contoso.com", event.Follow, sitesUpTo(5)...)
	e.settled() // with an hour of linger, only the size trigger can flush
	if got := e.sim.CallCount(); got != 1 {
		t.Errorf("graph calls: got %d, want 1", got)
	}
}

func TestCoalescesFollowAndUnfollow(t *testing.T) {
	tests := []struct {
		name    string
		first   event.Action
		second  event.Action
		initial []string
		want    []string
		wantOp  string
	}{
		{"follow then unfollow ends unfollowed", event.Follow, event.Unfollow, []string{site(1)}, nil, "remove"},
		{"unfollow then follow ends followed", event.Unfollow, event.Follow, nil, []string{site(1)}, "add"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, withConfig(func(c *handler.Config) { c.BatchLinger = time.Second }))
			e.sim.SetFollowed("ann@contoso.com", tt.initial...)
			e.send("ann@contoso.com", tt.first, site(1))
			e.send("ann@contoso.com", tt.second, strings.ToUpper(site(1)))
			e.settled()
			if got, want := e.followed("ann@contoso.com"), sorted(tt.want...); !slices.Equal(got, want) {
				t.Errorf("followed: got %v, want %v", got, want)
			}
			calls := e.sim.Calls()
			if len(calls) != 1 || calls[0].Op != tt.wantOp {
				t.Errorf("calls: got %+v, want one %s", calls, tt.wantOp)
			}
		})
	}
}

func TestGraphAnswers(t *testing.T) {
	tests := []struct {
		name      string
		action    event.Action
		initial   []string
		sites     []string
		setup     func(e *env)
		poison    []string // ids the simulator refuses calls for whole
		wantState []string
		wantDLQ   []string // site ids dead-lettered
		wantCode  string
	}{
		{name: "add 200", action: event.Follow, sites: []string{site(1), site(2)},
			wantState: []string{site(1), site(2)}},
		{name: "remove 204", action: event.Unfollow, initial: []string{site(1), site(2), site(3)},
			sites: []string{site(1), site(2)}, wantState: []string{site(3)}},
		{name: "add 207 unknown site", action: event.Follow, sites: []string{site(1), unknownSite},
			wantState: []string{site(1)}, wantDLQ: []string{unknownSite}, wantCode: "invalidRequest"},
		{name: "remove 207 unknown site", action: event.Unfollow, initial: []string{site(1)},
			sites: []string{site(1), unknownSite}, wantDLQ: []string{unknownSite}, wantCode: "invalidRequest"},
		{name: "add 207 permanent per-site error", action: event.Follow, sites: []string{site(1), site(2)},
			setup:     func(e *env) { e.sim.FailSite(site(2), "accessDenied", 100) },
			wantState: []string{site(1)}, wantDLQ: []string{site(2)}, wantCode: "accessDenied"},
		{name: "upper-case ids in answers match", action: event.Follow, sites: []string{site(1), site(2)},
			setup:     func(e *env) { e.sim.UpperCaseIDs(true) },
			wantState: []string{site(1), site(2)}},
		{name: "207 omitting a site is resolved, not assumed", action: event.Follow, sites: []string{site(1), site(2)},
			setup:     func(e *env) { e.sim.OmitSite(site(2), 1) },
			wantState: []string{site(1), site(2)}},
		{name: "transient per-site error retried for that site", action: event.Follow, sites: []string{site(1), site(2)},
			setup:     func(e *env) { e.sim.FailSite(site(2), "activityLimitReached", 1) },
			wantState: []string{site(1), site(2)}},
		{name: "503 then success", action: event.Follow, sites: []string{site(1)},
			setup:     func(e *env) { e.sim.Unavailable(1, 503) },
			wantState: []string{site(1)}},
		{name: "unknown user dead-letters every site", action: event.Follow, sites: []string{site(1), site(2)},
			setup:   func(e *env) { e.sim.UnknownUser("ann@contoso.com") },
			wantDLQ: []string{site(1), site(2)}},
		{name: "whole-call 400 dead-letters only the site behind it", action: event.Follow,
			sites:  []string{site(1), site(2), site(3), site(50), site(4)},
			poison: []string{site(50)}, wantState: []string{site(1), site(2), site(3), site(4)},
			wantDLQ: []string{site(50)}, wantCode: "invalidRequest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, withPoisonSites(tt.poison...))
			e.sim.SetFollowed("ann@contoso.com", tt.initial...)
			if tt.setup != nil {
				tt.setup(e)
			}
			e.send("ann@contoso.com", tt.action, tt.sites...)
			e.settled()
			if got, want := e.followed("ann@contoso.com"), sorted(tt.wantState...); !slices.Equal(got, want) {
				t.Errorf("followed: got %v, want %v", got, want)
			}
			var got []string
			for _, d := range e.deadLetters() {
				got = append(got, event.SiteKey(d.SiteID))
				if tt.wantCode != "" && d.Error.Code != tt.wantCode {
					t.Errorf("dead letter code: got %q, want %q", d.Error.Code, tt.wantCode)
				}
				if !strings.HasPrefix(d.Subject, dlqPrefix+".") || d.Action != tt.action || d.UserID != "ann@contoso.com" {
					t.Errorf("dead letter: got subject %q action %q user %q", d.Subject, d.Action, d.UserID)
				}
				if d.Origin.Stream != stream || d.Origin.Sequence == 0 || d.Event == nil {
					t.Errorf("dead letter origin/event missing: %+v", d.DeadLetter)
				}
			}
			slices.Sort(got)
			if want := sorted(tt.wantDLQ...); !slices.Equal(got, want) {
				t.Errorf("dead-lettered sites: got %v, want %v", got, want)
			}
		})
	}
}

func TestThrottleHonoursRetryAfter(t *testing.T) {
	e := newEnv(t)
	e.sim.Throttle(1, "1")
	e.send("ann@contoso.com", event.Follow, site(1))
	e.eventually("the 429", func() bool { c := e.sim.Calls(); return len(c) > 0 && c[0].Status == 429 })
	// The throttle is app-wide: bob's call, made after ann's 429, waits too.
	e.send("bob@contoso.com", event.Follow, site(2))
	e.settled()
	calls := e.sim.Calls()
	if len(calls) < 3 {
		t.Fatalf("calls: got %d, want a 429 then two successes", len(calls))
	}
	if calls[0].Status != 429 {
		t.Fatalf("first call status: got %d, want 429", calls[0].Status)
	}
	notBefore := calls[0].At.Add(time.Second)
	for _, c := range calls[1:] {
		if c.At.Before(notBefore) {
			t.Errorf("call for %s at +%v: before Retry-After deadline +1s", c.UserID, c.At.Sub(calls[0].At))
		}
	}
	if got := e.sim.EarlyCalls(); got != 0 {
		t.Errorf("early calls: got %d, want 0", got)
	}
}

func TestInvalidEventsAreDeadLetteredWithoutGraph(t *testing.T) {
	tooMany := make([]string, 101)
	for i := range tooMany {
		tooMany[i] = site(i)
	}
	tests := []struct {
		name string
		body string
	}{
		{"not JSON", `{"userId": "ann@contoso.com", "action": "follow", "siteIds": [`},
		{"not an object", `["ann@contoso.com"]`},
		{"missing userId", `{"action":"follow","siteIds":["` + site(1) + `"]}`},
		{"missing siteIds", `{"userId":"ann@contoso.com","action":"follow"}`},
		{"bad action", `{"userId":"ann@contoso.com","action":"like","siteIds":["` + site(1) + `"]}`},
		{"bad GUID", `{"userId":"ann@contoso.com","action":"follow","siteIds":["contoso.sharepoint.com,xyz,712a596e-90a1-49e3-9b48-bfa80bee8740"]}`},
		{"path characters in userId", `{"userId":"../admin","action":"follow","siteIds":["` + site(1) + `"]}`},
		{"slash in userId", `{"userId":"ann/../../me","action":"follow","siteIds":["` + site(1) + `"]}`},
		{"too many sites", request("ann@contoso.com", event.Follow, tooMany...)},
	}
	e := newEnv(t)
	for _, tt := range tests {
		e.publish("sitefollow.requests.app", tt.body)
	}
	e.send("good@contoso.com", event.Follow, site(1))
	e.settled()
	if got := e.sim.Calls(); len(got) != 1 || got[0].UserID != "good@contoso.com" {
		t.Errorf("graph calls: got %+v, want only the valid event's", got)
	}
	letters := e.deadLetters()
	if len(letters) != len(tests) {
		t.Fatalf("dead letters: got %d, want %d", len(letters), len(tests))
	}
	// Dead letters are published concurrently; the origin sequence gives
	// back the publish order.
	slices.SortFunc(letters, func(a, b dlq.Stored) int { return int(a.Origin.Sequence) - int(b.Origin.Sequence) })
	for i, d := range letters {
		t.Run(tests[i].name, func(t *testing.T) {
			if d.Error.Code != event.CodeInvalidEvent || d.Subject != dlqPrefix+".invalidEvent" {
				t.Errorf("code/subject: got %q %q, want invalidEvent", d.Error.Code, d.Subject)
			}
			if d.Error.HTTPStatus != 0 || d.Error.Message == "" {
				t.Errorf("error: got %+v, want httpStatus 0 and a reason", d.Error)
			}
			if d.Event == nil && d.RawPayload == nil {
				t.Error("dead letter carries neither event nor rawPayload")
			}
			if got := string(d.Event) + string(d.RawPayload); got != tests[i].body {
				t.Errorf("payload: got %q, want the original %q", got, tests[i].body)
			}
		})
	}
	if got, want := e.followed("good@contoso.com"), sorted(site(1)); !slices.Equal(got, want) {
		t.Errorf("valid event not disturbed: got %v, want %v", got, want)
	}
}

func TestDeadLetterPublishFailureNAKs(t *testing.T) {
	// No stream captures this prefix, so every dead-letter publish fails.
	e := newEnv(t, withDLQPrefix("nowhere.dlq"))
	e.send("ann@contoso.com", event.Follow, unknownSite)
	e.publish("sitefollow.requests.app", "not json")
	e.eventually("redelivery after NAK", func() bool { return e.sim.CallCount() >= 2 })
	if got := e.streamMsgs(stream); got != 2 {
		t.Errorf("requests in stream: got %d, want 2 (never acked)", got)
	}
	if got := e.streamMsgs(dlqStream); got != 0 {
		t.Errorf("dead letters: got %d, want 0", got)
	}
}

func TestRetriesExhaustedOnLastDelivery(t *testing.T) {
	e := newEnv(t, withConfig(func(c *handler.Config) { c.MaxDeliver = 2 }))
	e.sim.Unavailable(1000, 503)
	e.send("ann@contoso.com", event.Follow, site(1))
	e.settled()
	letters := e.deadLetters()
	if len(letters) != 1 {
		t.Fatalf("dead letters: got %d, want 1", len(letters))
	}
	d := letters[0]
	if d.Error.Code != event.CodeRetriesExhausted || d.Attempts != 2 || d.SiteID != site(1) {
		t.Errorf("dead letter: got code %q attempts %d site %q, want retriesExhausted, 2, %s", d.Error.Code, d.Attempts, d.SiteID, site(1))
	}
}

func TestRecoversAfterNATSRestart(t *testing.T) {
	e := newEnv(t)
	e.send("ann@contoso.com", event.Follow, site(1))
	e.settled()
	e.restartNATS()
	e.eventually("publish after restart", func() bool {
		_, err := e.js.Publish(t.Context(), "sitefollow.requests.app", []byte(request("ann@contoso.com", event.Follow, site(2))))
		return err == nil
	})
	e.settled()
	if got, want := e.followed("ann@contoso.com"), sorted(site(1), site(2)); !slices.Equal(got, want) {
		t.Errorf("followed: got %v, want %v", got, want)
	}
}

func TestShutdownMidBatchLosesNothing(t *testing.T) {
	tests := []struct {
		name     string
		latency  time.Duration
		shutdown time.Duration
	}{
		{"in-flight call finishes within the shutdown budget", 2 * time.Second, 20 * time.Second},
		{"in-flight call cut off is redelivered", 30 * time.Second, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, withConfig(func(c *handler.Config) { c.ShutdownTimeout = tt.shutdown }))
			e.sim.SetLatency(tt.latency)
			e.send("ann@contoso.com", event.Follow, site(1), site(2))
			e.send("bob@contoso.com", event.Follow, site(3))
			e.eventually("a call in flight", func() bool { return e.sim.CallCount() > 0 })
			e.stop()
			e.sim.SetLatency(0)
			e.start()
			e.settled()
			if got, want := e.followed("ann@contoso.com"), sorted(site(1), site(2)); !slices.Equal(got, want) {
				t.Errorf("ann followed: got %v, want %v", got, want)
			}
			if got, want := e.followed("bob@contoso.com"), sorted(site(3)); !slices.Equal(got, want) {
				t.Errorf("bob followed: got %v, want %v", got, want)
			}
			if n := len(e.deadLetters()); n != 0 {
				t.Errorf("dead letters: got %d, want 0", n)
			}
		})
	}
}

func TestDeadLetterIDsAreDeterministic(t *testing.T) {
	e := newEnv(t)
	e.send("ann@contoso.com", event.Follow, unknownSite)
	e.settled()
	letters := e.deadLetters()
	if len(letters) != 1 {
		t.Fatalf("dead letters: got %d, want 1", len(letters))
	}
	created := letters[0].Origin.StreamCreated
	if created.IsZero() {
		t.Fatal("origin.streamCreated: got none, want the request stream's creation time")
	}
	want := "sitefollow-dlq:" + stream + ":" + strconv.FormatInt(created.UnixNano(), 10) + ":" + itoa(int(letters[0].Origin.Sequence)) + ":" + event.SiteKey(unknownSite)
	if letters[0].MsgID != want {
		t.Errorf("Nats-Msg-Id: got %q, want %q", letters[0].MsgID, want)
	}
}

func TestSlowGraphDoesNotCauseRedelivery(t *testing.T) {
	// Graph answers after three AckWaits; InProgress must keep the message.
	e := newEnv(t, withConfig(func(c *handler.Config) { c.AckWait = time.Second; c.BatchLinger = 50 * time.Millisecond }))
	e.sim.SetLatency(3 * time.Second)
	e.send("ann@contoso.com", event.Follow, site(1))
	e.settled()
	if got := e.sim.CallCount(); got != 1 {
		t.Errorf("graph calls: got %d, want 1 (no redelivery)", got)
	}
	c, err := e.js.Consumer(t.Context(), stream, "sitefollow")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 {
		t.Errorf("redelivered: got %d, want 0", info.NumRedelivered)
	}
}

func TestConcurrencyLimitAcrossUsers(t *testing.T) {
	e := newEnv(t, withConfig(func(c *handler.Config) { c.MaxConcurrency = 1; c.BatchLinger = 50 * time.Millisecond }))
	latency := 300 * time.Millisecond
	e.sim.SetLatency(latency)
	for _, u := range []string{"a@contoso.com", "b@contoso.com", "c@contoso.com"} {
		e.send(u, event.Follow, site(1))
	}
	e.settled()
	calls := e.sim.Calls()
	if len(calls) != 3 {
		t.Fatalf("calls: got %d, want 3", len(calls))
	}
	for i := 1; i < len(calls); i++ {
		if calls[i].At.Before(calls[i-1].At.Add(latency)) {
			t.Errorf("call %d started %v after call %d, before its %v answer: more than one in flight", i, calls[i].At.Sub(calls[i-1].At), i-1, latency)
		}
	}
}

func TestQuietStreamFlushesBeforeLinger(t *testing.T) {
	// An hour of linger: only the quiet rule can send this batch.
	e := newEnv(t, withConfig(func(c *handler.Config) { c.BatchLinger = time.Hour; c.BatchQuiet = 300 * time.Millisecond }))
	e.send("ann@contoso.com", event.Follow, site(1))
	e.send("ann@contoso.com", event.Follow, site(2))
	e.settled()
	calls := e.sim.Calls()
	if len(calls) != 1 || len(calls[0].SiteIDs) != 2 {
		t.Errorf("calls: got %+v, want one call with both sites", calls)
	}
}

func TestRedeliveredRequestDoesNotUndoNewerOne(t *testing.T) {
	// The follow fails transiently on every in-process attempt and is sent
	// back with a 3 s delay; the unfollow published meanwhile succeeds. When
	// the follow returns it must not re-follow the site.
	e := newEnv(t, withConfig(func(c *handler.Config) {
		c.BatchLinger = 50 * time.Millisecond
		c.NakBaseDelay, c.NakMaxDelay = 3*time.Second, 3*time.Second
	}))
	e.sim.FailSite(site(1), "activityLimitReached", 4) // the client makes 4 attempts
	e.send("ann@contoso.com", event.Follow, site(1))
	e.eventually("the follow to be sent back", func() bool { return e.sim.CallCount() >= 4 })
	e.send("ann@contoso.com", event.Unfollow, site(1))
	e.settled()
	if got := e.followed("ann@contoso.com"); len(got) != 0 {
		t.Errorf("followed: got %v, want none (the newer unfollow wins)", got)
	}
	calls := e.sim.Calls()
	if last := calls[len(calls)-1]; last.Op != "remove" {
		t.Errorf("last call: got %s, want the unfollow's remove", last.Op)
	}
}

func TestRecoversWhenConsumerIsDeleted(t *testing.T) {
	e := newEnv(t)
	e.send("ann@contoso.com", event.Follow, site(1))
	e.settled()
	if err := e.js.DeleteConsumer(t.Context(), stream, "sitefollow"); err != nil {
		t.Fatalf("delete consumer: %v", err)
	}
	e.eventually("the consumer to be provisioned again", func() bool {
		_, err := e.js.Consumer(t.Context(), stream, "sitefollow")
		return err == nil
	})
	e.send("ann@contoso.com", event.Follow, site(2))
	e.settled()
	if got, want := e.followed("ann@contoso.com"), sorted(site(1), site(2)); !slices.Equal(got, want) {
		t.Errorf("followed: got %v, want %v", got, want)
	}
}

func TestRedeliveredMultiSiteMessageResendsOnlyUnsettled(t *testing.T) {
	// The follow of two sites fails transiently for site 1 on every
	// in-process attempt and is sent back; site 2 is applied. An unfollow of
	// site 2 published meanwhile succeeds. When the follow returns it must
	// re-send site 1 only: site 2 is settled, and newer intent owns it.
	e := newEnv(t, withConfig(func(c *handler.Config) {
		c.BatchLinger = 50 * time.Millisecond
		c.NakBaseDelay, c.NakMaxDelay = 3*time.Second, 3*time.Second
	}))
	e.sim.FailSite(site(1), "serviceNotAvailable", 4) // the client makes 4 attempts
	e.send("ann@contoso.com", event.Follow, site(1), site(2))
	e.eventually("the follow to be sent back", func() bool { return e.sim.CallCount() >= 4 })
	e.send("ann@contoso.com", event.Unfollow, site(2))
	e.settled()
	if got, want := e.followed("ann@contoso.com"), sorted(site(1)); !slices.Equal(got, want) {
		t.Errorf("followed: got %v, want %v (the newer unfollow of site 2 wins)", got, want)
	}
	calls := e.sim.Calls()
	last := calls[len(calls)-1]
	if last.Op != "add" || len(last.SiteIDs) != 1 || event.SiteKey(last.SiteIDs[0]) != event.SiteKey(site(1)) {
		t.Errorf("redelivered call: got %s %v, want add of site 1 alone", last.Op, last.SiteIDs)
	}
}

func TestRedeliveryToAnotherReplicaDoesNotUndoNewerOne(t *testing.T) {
	// Replica A sends the follow back after transient failures and stops;
	// replica B applies a newer unfollow, then receives the follow's
	// redelivery. B never saw the follow fail, so only state shared between
	// replicas can tell it the follow is stale.
	e := newEnv(t, withConfig(func(c *handler.Config) {
		c.BatchLinger = 50 * time.Millisecond
		c.NakBaseDelay, c.NakMaxDelay = 3*time.Second, 3*time.Second
	}))
	e.sim.FailSite(site(1), "serviceNotAvailable", 4)
	e.send("ann@contoso.com", event.Follow, site(1))
	e.eventually("the follow to be sent back", func() bool { return e.sim.CallCount() >= 4 })
	e.stop()
	e.start()
	e.send("ann@contoso.com", event.Unfollow, site(1))
	e.settled()
	if got := e.followed("ann@contoso.com"); len(got) != 0 {
		t.Errorf("followed: got %v, want none (the newer unfollow wins)", got)
	}
}

func TestTwoSentBackRequestsForOnePairComeBackInEitherOrder(t *testing.T) {
	// The follow is sent back twice (its next delay doubles); the newer
	// unfollow is sent back once, returns first and succeeds. The follow,
	// returning last, must not re-follow the site.
	e := newEnv(t, withConfig(func(c *handler.Config) {
		c.BatchLinger = 50 * time.Millisecond
		c.NakBaseDelay, c.NakMaxDelay = 2*time.Second, time.Minute
	}))
	e.sim.FailSite(site(1), "serviceNotAvailable", 12) // follow: 2 deliveries × 4 attempts; unfollow: 1 × 4
	e.send("ann@contoso.com", event.Follow, site(1))
	e.eventually("the follow to be sent back twice", func() bool { return e.sim.CallCount() >= 8 })
	e.send("ann@contoso.com", event.Unfollow, site(1))
	e.settled()
	if got := e.followed("ann@contoso.com"); len(got) != 0 {
		t.Errorf("followed: got %v, want none (the newer unfollow wins)", got)
	}
}

func TestSettledRequestRedeliveredIsHarmless(t *testing.T) {
	// The request's outcome is recorded but its ack was lost (a leader
	// failover, a crash between the two): its redelivery must be settled
	// without calling Graph again.
	e := newEnv(t)
	led, err := ledger.Open(t.Context(), e.js, ledger.Config{Bucket: stateBucket, Stream: stream, Owner: "earlier", LeaseTTL: leaseTTL})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := led.Acquire(t.Context(), event.UserKey("ann@contoso.com"))
	if err != nil {
		t.Fatal(err)
	}
	// The stream is fresh, so the request published next is sequence 1.
	if err := led.Commit(t.Context(), ls, map[string]ledger.Settlement{event.SiteKey(site(1)): {Seq: 1, Outcome: ledger.Applied}}); err != nil {
		t.Fatal(err)
	}
	if err := led.Release(t.Context(), ls); err != nil {
		t.Fatal(err)
	}
	e.sim.SetFollowed("ann@contoso.com", site(1))
	e.send("ann@contoso.com", event.Follow, site(1))
	e.settled()
	if got := e.sim.CallCount(); got != 0 {
		t.Errorf("graph calls: got %d, want 0 (the request was already applied)", got)
	}
}

func TestReplicasNeverRaceOneUsersCalls(t *testing.T) {
	// Replica A holds a slow follow for each user; replica B, started
	// meanwhile, gets some of the newer unfollows. Were B to send its
	// unfollow while A's follow is in flight, the follow would land last.
	e := newEnv(t, withConfig(func(c *handler.Config) { c.BatchLinger = 20 * time.Millisecond; c.MaxConcurrency = 16 }))
	e.sim.SetOpLatency("add", 2*time.Second)
	users := make([]string, 10)
	for i := range users {
		users[i] = "user" + itoa(i) + "@contoso.com"
		e.send(users[i], event.Follow, site(1))
	}
	e.eventually("every follow in flight", func() bool { return e.sim.CallCount() == len(users) })
	e.start()
	e.eventually("both replicas pulling", func() bool {
		c, err := e.js.Consumer(t.Context(), stream, "sitefollow")
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		return err == nil && info.NumWaiting >= 2
	})
	for _, u := range users {
		e.send(u, event.Unfollow, site(1))
	}
	e.settled()
	for _, u := range users {
		if got := e.followed(u); len(got) != 0 {
			t.Errorf("%s followed: got %v, want none (the newer unfollow wins)", u, got)
		}
	}
}

// countingGraph counts a replica's Graph calls and can slow them down.
type countingGraph struct {
	handler.Graph
	delay time.Duration
	calls atomic.Int64
}

func (g *countingGraph) Apply(ctx context.Context, userID string, op graphclient.Operation, sites []string, opts ...graphclient.ApplyOption) []graphclient.SiteResult {
	g.calls.Add(1)
	select {
	case <-time.After(g.delay):
	case <-ctx.Done():
	}
	return g.Graph.Apply(ctx, userID, op, sites, opts...)
}

func TestThrottledReplicaDoesNotHoldOthersWork(t *testing.T) {
	// Replica A is throttled to a crawl (a fifth of a call per second); B
	// is not. A must hold only what its pace sends soon and leave the rest
	// to B, instead of taking everything MaxAckPending allows.
	e := newEnv(t, withConfig(func(c *handler.Config) {
		c.BatchLinger = 20 * time.Millisecond
		c.AckWait = 5 * time.Second
		c.MaxConcurrency = 2
	}))
	e.stop()
	const users = 600
	for i := range users {
		e.send("user"+itoa(i)+"@contoso.com", event.Follow, site(1))
	}
	slowCfg := e.cfg
	slowCfg.Pace = func() float64 { return 0.2 }
	slow := &countingGraph{delay: 300 * time.Millisecond}
	e.startReplica(slowCfg, func(g handler.Graph) handler.Graph { slow.Graph = g; return slow })
	e.eventually("the throttled replica to hold work", func() bool { return slow.calls.Load() > 0 })
	fast := &countingGraph{}
	e.startReplica(e.cfg, func(g handler.Graph) handler.Graph { fast.Graph = g; return fast })
	e.settled()
	if got := fast.calls.Load(); got < users/2 {
		t.Errorf("calls by the unthrottled replica: got %d of %d, want at least half (the throttled one has %d)", got, users, slow.calls.Load())
	}
}

func TestOlderRequestWaitsForANewerOneInDoubt(t *testing.T) {
	// A replica sent the newer unfollow, Graph applied it, and the replica
	// died before recording it: only its pending mark is left, and the
	// unfollow is still unacknowledged, held by the dead replica until its
	// AckWait passes. The older follow, redelivered meanwhile, must wait for
	// the unfollow instead of landing after it.
	e := newEnv(t, withConfig(func(c *handler.Config) { c.AckWait = 5 * time.Second; c.BatchLinger = 20 * time.Millisecond }))
	e.stop()
	e.send("ann@contoso.com", event.Follow, site(1))   // sequence 1
	e.send("ann@contoso.com", event.Unfollow, site(1)) // sequence 2
	// The dead replica: it took both, let the follow go back, kept the unfollow.
	cons, err := e.js.Consumer(t.Context(), stream, "sitefollow")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if meta, err := m.Metadata(); err == nil && meta.Sequence.Stream == 1 {
			if err := m.Nak(); err != nil {
				t.Fatal(err)
			}
		}
	}
	led, err := ledger.Open(t.Context(), e.js, ledger.Config{Bucket: stateBucket, Stream: stream, Owner: "dead", LeaseTTL: leaseTTL})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := led.Acquire(t.Context(), event.UserKey("ann@contoso.com"))
	if err != nil {
		t.Fatal(err)
	}
	if err := led.Intend(t.Context(), ls, map[string]uint64{event.SiteKey(site(1)): 2}); err != nil {
		t.Fatal(err)
	}
	if err := led.Release(t.Context(), ls); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.settled()
	if got := e.followed("ann@contoso.com"); len(got) != 0 {
		t.Errorf("followed: got %v, want none", got)
	}
	for _, ef := range e.sim.Effects() {
		if ef.Op == graphsim.EffectFollow {
			t.Errorf("effect %+v: the older follow was applied while the newer unfollow was in doubt", ef)
		}
	}
}
