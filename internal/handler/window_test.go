package handler

import (
	"strings"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/graphclient"
)

// TestNewUserWaits: the window starts at a valid occurredAt no later than
// the publish time, else at the publish time; waits grow with the time
// waited, within NakBaseDelay and the cap, and never pass the window's end;
// past it, or with no window, the site is dead-lettered.
func TestNewUserWaits(t *testing.T) {
	published := time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		window     time.Duration
		occurredAt string
		now        time.Duration // after published
		want       time.Duration // 0: dead-lettered
		wantFrom   string        // in the dead letter's message
	}{
		{name: "first try", window: 24 * time.Hour, now: time.Second, want: 5 * time.Second},
		{name: "grows with the time waited", window: 24 * time.Hour, now: 40 * time.Second, want: 40 * time.Second},
		{name: "capped at a 24th of the window", window: 24 * time.Hour, now: 5 * time.Hour, want: time.Hour},
		{name: "capped at NakMaxDelay for short windows", window: time.Hour, now: 50 * time.Minute, want: 5 * time.Minute},
		{name: "the last try lands at the window's end", window: 24 * time.Hour, now: 23*time.Hour + 50*time.Minute, want: 10 * time.Minute},
		{name: "at the window's end", window: 24 * time.Hour, now: 24 * time.Hour, wantFrom: "the publish time 2026-05-01T08:00:00Z"},
		{name: "from occurredAt", window: 24 * time.Hour, occurredAt: "2026-05-01T07:59:00Z", now: 0, want: time.Minute},
		{name: "occurredAt past the window", window: 24 * time.Hour, occurredAt: "2026-04-29T08:00:00+02:00", now: 0, wantFrom: "occurredAt 2026-04-29T08:00:00+02:00"},
		{name: "occurredAt after the publish time counts as it", window: 24 * time.Hour, occurredAt: "2026-05-03T08:00:00Z", now: 24 * time.Hour, wantFrom: "the publish time"},
		{name: "no window", window: 0, now: 0, wantFrom: "SITEFOLLOW_NEW_USER_WINDOW is 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := published.Add(tt.now)
			h := New(Config{NewUserWindow: tt.window, NakBaseDelay: 5 * time.Second, NakMaxDelay: 5 * time.Minute,
				Now: func() time.Time { return now }}, nil, nil, nil, zeroLogger(), nil)
			tr := &tracked{stamp: published.UnixNano()}
			if tt.occurredAt != "" {
				tr.setRare().occurredAt = tt.occurredAt
			}
			w := h.newUser(tr, &graphclient.SiteError{Code: graphclient.CodeUserNotFound, Message: "graph answered 404 itemNotFound", HTTPStatus: 404})
			if w.delay != tt.want {
				t.Errorf("wait: got %v, want %v", w.delay, tt.want)
			}
			if tt.want == 0 && (w.f.Code != "userNotFound" || w.f.HTTPStatus != 404 ||
				!strings.HasPrefix(w.f.Message, "graph answered 404 itemNotFound; ") || !strings.Contains(w.f.Message, tt.wantFrom)) {
				t.Errorf("dead letter: got %+v, want userNotFound, 404, Graph's answer and %q", w.f, tt.wantFrom)
			}
		})
	}
}

// TestWaitingRequestIsNAKedForItsWait: a request waiting for a new user is
// redelivered after its wait, however many deliveries it has had, and not
// before a Retry-After; the others after the failures' back-off.
func TestWaitingRequestIsNAKedForItsWait(t *testing.T) {
	h := New(Config{NakBaseDelay: time.Second, NakMaxDelay: 10 * time.Second, MaxAckPending: 100}, nil, nil, nil, zeroLogger(), nil)
	tests := []struct {
		name       string
		delivered  uint16
		wait       time.Duration
		retryAfter time.Duration
		lo, hi     time.Duration
	}{
		{name: "wait after many deliveries", delivered: 20, wait: 3 * time.Second, lo: 3 * time.Second, hi: 3 * time.Second},
		{name: "wait past NakMaxDelay", delivered: 2, wait: time.Hour, lo: time.Hour, hi: time.Hour},
		{name: "Retry-After longer than the wait", delivered: 1, wait: 2 * time.Second, retryAfter: 7 * time.Second, lo: 7 * time.Second, hi: 7 * time.Second},
		{name: "no wait: back-off", delivered: 20, lo: 8 * time.Second, hi: 10 * time.Second},
	}
	for _, tt := range tests {
		tr := &tracked{delivered: tt.delivered}
		if tt.wait > 0 {
			tr.setRare().userWait = tt.wait
		}
		tr.holdRetryAfter(tt.retryAfter)
		if got := h.nakFor(tr); got < tt.lo || got > tt.hi {
			t.Errorf("%s: got %v, want between %v and %v", tt.name, got, tt.lo, tt.hi)
		}
	}
}
