package ledger

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash/fnv"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/natsembed"
)

const (
	bucket = "SITEFOLLOW_STATE"
	stream = "SITEFOLLOW"
)

// world is an embedded JetStream server with the request stream and the
// ledger's bucket, as provisioning leaves them.
type world struct {
	t  *testing.T
	js jetstream.JetStream
}

func newWorld(t *testing.T) *world {
	t.Helper()
	t.Parallel()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, js: js}
	w.createStream()
	if _, err := js.CreateKeyValue(t.Context(), BucketConfig(bucket, 1, time.Second)); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return w
}

func (w *world) createStream() {
	w.t.Helper()
	if _, err := w.js.CreateStream(w.t.Context(), jetstream.StreamConfig{
		Name: stream, Subjects: []string{"sitefollow.requests.>"}, Retention: jetstream.WorkQueuePolicy,
	}); err != nil {
		w.t.Fatalf("create stream: %v", err)
	}
}

func (w *world) ledger(owner string, ttl time.Duration) *Ledger {
	w.t.Helper()
	l, err := Open(w.t.Context(), w.js, Config{Bucket: bucket, Stream: stream, Owner: owner, LeaseTTL: ttl})
	if err != nil {
		w.t.Fatalf("open: %v", err)
	}
	return l
}

func TestLeaseIsExclusiveUntilReleased(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	a, b := w.ledger("a", time.Minute), w.ledger("b", time.Minute)
	la, err := a.Acquire(ctx, "ann@contoso.com")
	if err != nil {
		t.Fatalf("a acquire: %v", err)
	}
	if _, err := b.Acquire(ctx, "ann@contoso.com"); !errors.Is(err, ErrBusy) {
		t.Fatalf("b acquire while a holds it: got %v, want ErrBusy", err)
	}
	if _, err := b.Acquire(ctx, "bob@contoso.com"); err != nil {
		t.Errorf("b acquire of another user: got %v, want none", err)
	}
	if err := a.Release(ctx, la); err != nil {
		t.Fatalf("a release: %v", err)
	}
	if _, err := b.Acquire(ctx, "ann@contoso.com"); err != nil {
		t.Errorf("b acquire after release: got %v, want none", err)
	}
}

func TestLeaseOfADeadReplicaExpires(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	a, b := w.ledger("a", 2*time.Second), w.ledger("b", 2*time.Second)
	if _, err := a.Acquire(ctx, "ann@contoso.com"); err != nil {
		t.Fatalf("a acquire: %v", err)
	}
	// a never renews nor releases, as a replica killed with -9.
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for {
		_, err := b.Acquire(ctx, "ann@contoso.com")
		if err == nil {
			break
		}
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			t.Fatalf("b acquire: got %v, want the lease once a's TTL passed", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("b took the lease after %v, before a's 2s TTL could have passed", waited)
	}
}

func TestEnsureRenewsAndNoticesLoss(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	a, b := w.ledger("a", 3*time.Second), w.ledger("b", 3*time.Second)
	la, err := a.Acquire(ctx, "ann@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	// Asking for more than remains forces a renewal, which succeeds while a
	// holds the lease.
	if err := a.Ensure(ctx, la, 2500*time.Millisecond); err != nil {
		t.Fatalf("ensure while held: %v", err)
	}
	if err := a.Release(ctx, la); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(ctx, "ann@contoso.com"); err != nil {
		t.Fatal(err)
	}
	if err := a.Ensure(ctx, la, time.Hour); !errors.Is(err, ErrLost) {
		t.Errorf("ensure after b took the user: got %v, want ErrLost", err)
	}
	if err := a.Commit(ctx, la, applied(map[string]uint64{"site": 1})); !errors.Is(err, ErrLost) {
		t.Errorf("commit after losing the lease: got %v, want ErrLost", err)
	}
}

func TestRecordIsSharedAndKeepsTheNewest(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	a, b := w.ledger("a", time.Minute), w.ledger("b", time.Minute)
	la, err := a.Acquire(ctx, "ann@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(ctx, la, applied(map[string]uint64{"s1": 10, "s2": 20})); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if err := a.Commit(ctx, la, applied(map[string]uint64{"s1": 5, "s3": 30})); err != nil {
		t.Fatalf("second commit: %v", err)
	}
	if err := a.Release(ctx, la); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Acquire(ctx, "ann@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	for site, want := range map[string]uint64{"s1": 10, "s2": 20, "s3": 30, "s4": 0} {
		if got := lb.Applied(site); got != want {
			t.Errorf("applied %s: got %d, want %d", site, got, want)
		}
	}
}

func TestRecordOfAReCreatedStreamIsIgnored(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	a := w.ledger("a", time.Minute)
	la, err := a.Acquire(ctx, "ann@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(ctx, la, applied(map[string]uint64{"s1": 10})); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, la); err != nil {
		t.Fatal(err)
	}
	if err := w.js.DeleteStream(ctx, stream); err != nil {
		t.Fatal(err)
	}
	w.createStream()
	// A replica started after the re-creation: its sequences start at 1
	// again, so the old record must not make them look stale.
	b := w.ledger("b", time.Minute)
	lb, err := b.Acquire(ctx, "ann@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	if got := lb.Applied("s1"); got != 0 {
		t.Errorf("applied s1 after the stream was re-created: got %d, want 0", got)
	}
	if err := b.Commit(ctx, lb, applied(map[string]uint64{"s1": 1})); err != nil {
		t.Errorf("commit over the old record: %v", err)
	}
}

func TestPruneDropsWhatNoRequestCanBeOlderThan(t *testing.T) {
	tests := []struct {
		name  string
		in    siteSeqs
		floor uint64
		want  []uint64
	}{
		{"below the floor goes", siteSeqs{1: 5, 2: 10, 3: 11}, 10, []uint64{2, 3}},
		{"no floor keeps all", siteSeqs{1: 5}, 0, []uint64{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.prune(tt.floor)
			if len(tt.in) != len(tt.want) {
				t.Fatalf("kept %v, want %v", tt.in, tt.want)
			}
			for _, k := range tt.want {
				if _, ok := tt.in[k]; !ok {
					t.Errorf("kept %v, want %v", tt.in, tt.want)
				}
			}
		})
	}
	big := make(siteSeqs, maxRecordSites+10)
	for i := range maxRecordSites + 10 {
		big[siteHash("site"+strconv.Itoa(i))] = uint64(i + 1)
	}
	big.prune(0)
	if len(big) != maxRecordSites {
		t.Errorf("record past the bound: kept %d entries, want %d", len(big), maxRecordSites)
	}
	for _, seq := range big {
		if seq <= 10 {
			t.Fatalf("kept entry %d: the oldest should go first", seq)
		}
	}
}

// TestRecordNamesSitesAsBefore pins the bucket's record format: operators
// read it, and records written before the in-memory form changed must
// still be read.
func TestRecordNamesSitesAsBefore(t *testing.T) {
	site := "contoso.sharepoint.com,00000000-0000-0000-0000-000000000001,00000000-0000-0000-0000-000000000002"
	// base64url of the big-endian FNV-1a 64 of site, as records name it.
	h := fnv.New64a()
	h.Write([]byte(site))
	name := base64.RawURLEncoding.EncodeToString(h.Sum(nil))
	b, err := json.Marshal(record{Stream: "S", Epoch: "e", Applied: siteSeqs{siteHash(site): 7}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"stream":"S","epoch":"e","applied":{"` + name + `":7}}`
	if string(b) != want {
		t.Errorf("record: got %s, want %s", b, want)
	}
	var r record
	if err := json.Unmarshal([]byte(want), &r); err != nil {
		t.Fatalf("read record: %v", err)
	}
	if got := r.Applied[siteHash(site)]; got != 7 {
		t.Errorf("read back: got %d, want 7", got)
	}
	if b, err := json.Marshal(record{Stream: "S", Epoch: "e", Applied: siteSeqs{}.nonEmpty()}); err != nil || string(b) != `{"stream":"S","epoch":"e","applied":null}` {
		t.Errorf("empty record: got %s (%v), want applied null as before", b, err)
	}
	for _, bad := range []string{`{"applied":{"not-a-hash":1}}`, `{"applied":{"AAAA":1}}`} {
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("record %s: got no error", bad)
		}
	}
}

func TestOpenRefusesWhatCannotWork(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no bucket", Config{Stream: stream, LeaseTTL: time.Minute}},
		{"unknown bucket", Config{Bucket: "NOPE", Stream: stream, LeaseTTL: time.Minute}},
		{"lease too short", Config{Bucket: bucket, Stream: stream, LeaseTTL: time.Second}},
		{"unknown stream", Config{Bucket: bucket, Stream: "NOPE", LeaseTTL: time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Open(context.Background(), w.js, tt.cfg); err == nil {
				t.Error("Open: got no error")
			}
		})
	}
}

// applied is Commit's argument for requests Graph applied.
func applied(seqs map[string]uint64) map[string]Settlement {
	out := make(map[string]Settlement, len(seqs))
	for site, seq := range seqs {
		out[site] = Settlement{Seq: seq, Outcome: Applied}
	}
	return out
}

func TestPendingMarksOutliveTheirReplica(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	a, b := w.ledger("a", time.Minute), w.ledger("b", time.Minute)
	la, err := a.Acquire(ctx, "ann@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Intend(ctx, la, map[string]uint64{"s1": 7, "s2": 8, "s3": 9}); err != nil {
		t.Fatalf("intend: %v", err)
	}
	// s1 applied, s2 dead-lettered, s3 unanswered; then a is gone.
	if err := a.Commit(ctx, la, map[string]Settlement{
		"s1": {Seq: 7, Outcome: Applied}, "s2": {Seq: 8, Outcome: Settled}, "s3": {Seq: 9, Outcome: Unknown},
	}); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if err := a.Release(ctx, la); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Acquire(ctx, "ann@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		site             string
		applied, pending uint64
	}{{"s1", 7, 0}, {"s2", 0, 0}, {"s3", 0, 9}} {
		if got := lb.Applied(tt.site); got != tt.applied {
			t.Errorf("applied %s: got %d, want %d", tt.site, got, tt.applied)
		}
		if got := lb.Pending(tt.site); got != tt.pending {
			t.Errorf("pending %s: got %d, want %d", tt.site, got, tt.pending)
		}
	}
}

func TestInStreamTellsUnsettledFromGone(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	ack, err := w.js.Publish(ctx, "sitefollow.requests.app", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	l := w.ledger("a", time.Minute)
	for _, tt := range []struct {
		seq  uint64
		want bool
	}{{ack.Sequence, true}, {ack.Sequence + 1, false}} {
		got, err := l.InStream(ctx, tt.seq)
		if err != nil || got != tt.want {
			t.Errorf("InStream(%d): got %v, %v, want %v", tt.seq, got, err, tt.want)
		}
	}
}

func TestKeepAliveHoldsALeasePastItsTTL(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	a, b := w.ledger("a", 2*time.Second), w.ledger("b", 2*time.Second)
	la, err := a.Acquire(ctx, "ann@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	stop := a.KeepAlive(ctx, la)
	// Three TTLs: without renewals b would have the lease after the first.
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if _, err := b.Acquire(ctx, "ann@contoso.com"); !errors.Is(err, ErrBusy) {
			t.Fatalf("b acquire while a keeps the lease alive: got %v, want ErrBusy", err)
		}
	}
	stop()
	if err := a.Commit(ctx, la, applied(map[string]uint64{"s1": 1})); err != nil {
		t.Errorf("commit after a long wait: %v", err)
	}
}

func TestSeqListKeepsEverySite(t *testing.T) {
	tests := []struct {
		name string
		in   siteSeqs
	}{
		{"none", nil},
		{"one", siteSeqs{siteHash("a"): 1}},
		{"many", func() siteSeqs {
			s := siteSeqs{}
			for i := range 100 {
				s[siteHash("site"+strconv.Itoa(i))] = uint64(i + 1)
			}
			return s
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tt.in.list()
			if len(l) != len(tt.in) {
				t.Fatalf("list: got %d entries, want %d", len(l), len(tt.in))
			}
			for site, want := range tt.in {
				if got := l.get(site); got != want {
					t.Errorf("get %x: got %d, want %d", site, got, want)
				}
			}
			if got := l.get(siteHash("absent")); got != 0 {
				t.Errorf("get absent: got %d, want 0", got)
			}
			if back := l.open(0); len(back) != len(tt.in) {
				t.Errorf("open: got %d entries, want %d", len(back), len(tt.in))
			}
		})
	}
}
