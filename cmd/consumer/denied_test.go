package main

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/natsembed"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// TestDeadLetterPublishDenied: while the consumer's NATS user may not
// publish on sitefollow.dlq.>, an invalid event's dead letter cannot be
// stored, so the request is kept and delivered again past
// SITEFOLLOW_MAX_DELIVER (never stranded), counted in
// sitefollow_stranded_requests, and /readyz fails its dead-letters check;
// once the permission is granted, the dead letter is stored and the request
// acknowledged.
func TestDeadLetterPublishDenied(t *testing.T) {
	t.Parallel()
	users := func(deny ...string) []*server.User {
		consumer := &server.User{Username: "sitefollow", Password: "consumer-password"}
		if len(deny) > 0 {
			consumer.Permissions = &server.Permissions{Publish: &server.SubjectPermission{Deny: deny}}
		}
		return []*server.User{consumer, {Username: "admin", Password: "admin-password"}}
	}
	ns := testkit.StartNATS(t, testkit.NATSOptions{Users: users("sitefollow.dlq.>")})
	sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}})
	settings := simSettings(t, ns.URLWith("sitefollow", "consumer-password"), sim)
	settings["SITEFOLLOW_MAX_DELIVER"] = "2"
	settings["SITEFOLLOW_NAK_DELAY"] = "100ms"
	settings["SITEFOLLOW_NAK_MAX_DELAY"] = "200ms"
	p := serveInProcess(t, settings, true)

	nc, js := testkit.Connect(t, ns.URLWith("admin", "admin-password"))
	acks := testkit.WatchAcks(t, nc, "SITEFOLLOW", "sitefollow")
	seq := testkit.PublishBody(t, js, []byte("not json"))
	testkit.Eventually(t, 3*time.Minute, "deliveries past SITEFOLLOW_MAX_DELIVER=2", func() bool { return acks.Delivered(seq) > 3 })
	if got := strandedRequests(t, p.base); got <= 0 {
		t.Errorf("sitefollow_stranded_requests: got %v, want more than 0", got)
	}
	if code, body := get(t, p.base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "dead letters") {
		t.Errorf("readyz: got %d %q, want %d naming the dead-letters check", code, body, http.StatusServiceUnavailable)
	}
	if got := testkit.StreamMsgs(js, "SITEFOLLOW"); got != 1 {
		t.Errorf("request stream: got %d messages, want the request kept", got)
	}

	ns.Reload(func(o *natsembed.Options) { o.Users = users() })
	testkit.Eventually(t, 2*time.Minute, "the request to settle", func() bool { return testkit.StreamMsgs(js, "SITEFOLLOW") == 0 })
	letters := testkit.DeadLetters(t, js)
	if len(letters) != 1 || letters[0].Error.Code != "invalidEvent" {
		t.Errorf("dead letters: got %+v, want one invalidEvent", letters)
	}
	testkit.Eventually(t, time.Minute, "no stranded requests and ready", func() bool {
		code, _ := get(t, p.base+"/readyz")
		return strandedRequests(t, p.base) == 0 && code == http.StatusOK
	})
}

// strandedRequests reads sitefollow_stranded_requests from /metrics; -1 when
// it is missing.
func strandedRequests(t *testing.T, base string) float64 {
	t.Helper()
	_, body := get(t, base+"/metrics")
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, "sitefollow_stranded_requests "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("sitefollow_stranded_requests %q: %v", v, err)
			}
			return f
		}
	}
	return -1
}
