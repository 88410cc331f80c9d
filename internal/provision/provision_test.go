package provision

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/natsembed"
)

func TestApplyIsIdempotentAndKeepsRequests(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{
		Stream: "SITEFOLLOW", Subjects: []string{"sitefollow.requests.>"}, Duplicates: 5 * time.Minute, Consumer: "sitefollow",
		AckWait: time.Minute, MaxDeliver: 10, MaxAckPending: 20000,
		DLQStream: "SITEFOLLOW_DLQ", DLQSubjects: []string{"sitefollow.dlq.>"}, DLQDuplicates: time.Hour,
		StateBucket: "SITEFOLLOW_STATE", LeaseTTL: time.Minute,
	}
	ctx := t.Context()
	for range 2 {
		if _, err := Apply(ctx, js, spec); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	if _, err := Lookup(ctx, js, spec); err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	req, err := js.Stream(ctx, "SITEFOLLOW")
	if err != nil {
		t.Fatal(err)
	}
	rc := req.CachedInfo().Config
	if rc.Retention != jetstream.WorkQueuePolicy || rc.MaxAge != 0 || rc.MaxMsgs != -1 || rc.MaxBytes != -1 || rc.Storage != jetstream.FileStorage {
		t.Errorf("request stream: got %+v, want WorkQueue, file storage, no limits", rc)
	}
	if rc.Duplicates != 5*time.Minute {
		t.Errorf("request stream: got duplicates window %v, want 5m (producers' Nats-Msg-Id)", rc.Duplicates)
	}
	dlq, err := js.Stream(ctx, "SITEFOLLOW_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if dc := dlq.CachedInfo().Config; dc.Duplicates != time.Hour || dc.MaxAge != 0 {
		t.Errorf("dead-letter stream: got duplicates %v max age %v, want 1h and none", dc.Duplicates, dc.MaxAge)
	}
	c, err := js.Consumer(ctx, "SITEFOLLOW", "sitefollow")
	if err != nil {
		t.Fatal(err)
	}
	cc := c.CachedInfo().Config
	if cc.AckPolicy != jetstream.AckExplicitPolicy || cc.AckWait != time.Minute || cc.MaxDeliver != -1 || cc.MaxAckPending != 20000 {
		// MaxDeliver -1: the consumer applies SITEFOLLOW_MAX_DELIVER itself, so no request is stranded.
		t.Errorf("consumer: got %+v, want explicit acks, AckWait 1m, MaxDeliver -1 (unlimited), MaxAckPending 20000", cc)
	}
	missing := spec
	missing.Consumer = "nobody"
	if _, err := Lookup(ctx, js, missing); err == nil {
		t.Error("Lookup of a missing consumer: got no error")
	}
}

func TestReconcileNeverLowersOrOverridesTheOperator(t *testing.T) {
	spec := Spec{Stream: "SITEFOLLOW", Subjects: []string{"sitefollow.requests.>"}, Replicas: 1,
		DLQStream: "SITEFOLLOW_DLQ", DLQSubjects: []string{"sitefollow.dlq.>"}, DLQDuplicates: time.Hour}
	want := spec.RequestStream()
	tests := []struct {
		name        string
		have        func(c *jetstream.StreamConfig)
		replicas    int
		wantChanged bool
		check       func(t *testing.T, got jetstream.StreamConfig)
		wantNotes   int
		wantErr     bool
	}{
		{name: "identical: nothing to do", have: func(*jetstream.StreamConfig) {}, replicas: 1},
		{name: "R3 kept when R1 asked", have: func(c *jetstream.StreamConfig) { c.Replicas = 3 }, replicas: 1, wantNotes: 1,
			check: func(t *testing.T, got jetstream.StreamConfig) {
				if got.Replicas != 3 {
					t.Errorf("replicas: got %d, want 3", got.Replicas)
				}
			}},
		{name: "R1 raised when R3 asked", have: func(*jetstream.StreamConfig) {}, replicas: 3, wantChanged: true,
			check: func(t *testing.T, got jetstream.StreamConfig) {
				if got.Replicas != 3 {
					t.Errorf("replicas: got %d, want 3", got.Replicas)
				}
			}},
		{name: "operator limits kept", have: func(c *jetstream.StreamConfig) {
			c.MaxAge, c.MaxBytes, c.MaxMsgs = 24*time.Hour, 1<<30, 1000
		}, replicas: 1, wantNotes: 3, check: func(t *testing.T, got jetstream.StreamConfig) {
			if got.MaxAge != 24*time.Hour || got.MaxBytes != 1<<30 || got.MaxMsgs != 1000 {
				t.Errorf("limits: got age %v bytes %d msgs %d, want the operator's", got.MaxAge, got.MaxBytes, got.MaxMsgs)
			}
		}},
		{name: "missing subject added", have: func(c *jetstream.StreamConfig) { c.Subjects = []string{"other.>"} }, replicas: 1, wantChanged: true,
			check: func(t *testing.T, got jetstream.StreamConfig) {
				if len(got.Subjects) != 2 {
					t.Errorf("subjects: got %v, want other.> and sitefollow.requests.>", got.Subjects)
				}
			}},
		{name: "limits retention refused", have: func(c *jetstream.StreamConfig) { c.Retention = jetstream.LimitsPolicy }, replicas: 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			have := want
			tt.have(&have)
			s := spec
			s.Replicas = tt.replicas
			var notes []string
			s.Report = func(n string) { notes = append(notes, n) }
			w := s.RequestStream()
			got, changed, err := reconcile(s, have, w)
			var conflict *ConflictError
			if tt.wantErr {
				if !errors.As(err, &conflict) {
					t.Fatalf("error: got %v, want a *ConflictError", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			if changed != tt.wantChanged {
				t.Errorf("changed: got %v, want %v", changed, tt.wantChanged)
			}
			if len(notes) != tt.wantNotes {
				t.Errorf("notes: got %q, want %d", notes, tt.wantNotes)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}
