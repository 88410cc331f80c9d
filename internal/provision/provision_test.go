package provision

import (
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
		Stream: "SITEFOLLOW", Subjects: []string{"sitefollow.requests.>"}, Consumer: "sitefollow",
		AckWait: time.Minute, MaxDeliver: 10, MaxAckPending: 20000,
		DLQStream: "SITEFOLLOW_DLQ", DLQSubjects: []string{"sitefollow.dlq.>"}, DLQDuplicates: time.Hour,
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
	if cc.AckPolicy != jetstream.AckExplicitPolicy || cc.AckWait != time.Minute || cc.MaxDeliver != 10 || cc.MaxAckPending != 20000 {
		t.Errorf("consumer: got %+v", cc)
	}
	missing := spec
	missing.Consumer = "nobody"
	if _, err := Lookup(ctx, js, missing); err == nil {
		t.Error("Lookup of a missing consumer: got no error")
	}
}
