package dlq_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// world is an embedded server with the consumer's streams.
func world(t *testing.T) (jetstream.JetStream, *dlq.Store) {
	t.Helper()
	n := testkit.StartNATS(t, testkit.NATSOptions{})
	_, js := testkit.Connect(t, n.URL())
	testkit.PrecreateStreams(t, js, testkit.Spec(t, nil), 1)
	store, err := dlq.Open(t.Context(), js, testkit.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	return js, store
}

func scanAll(t *testing.T, store *dlq.Store, f dlq.Filter) []dlq.Record {
	t.Helper()
	var recs []dlq.Record
	if err := store.Scan(t.Context(), f, func(r dlq.Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatalf("scan: %v", err)
	}
	return recs
}

func seqs(recs []dlq.Record) []uint64 {
	var out []uint64
	for _, r := range recs {
		out = append(out, r.Seq)
	}
	return out
}

func TestScanFilters(t *testing.T) {
	t.Parallel()
	js, store := world(t)
	s1, s2, s3 := testkit.PublishDeadLetter(t, js, testkit.SiteDeadLetter("alice@contoso.com", testkit.Site(1), "accessDenied", 1)),
		testkit.PublishDeadLetter(t, js, testkit.SiteDeadLetter("bob@contoso.com", testkit.Site(1), "itemNotFound", 2)),
		testkit.PublishDeadLetter(t, js, testkit.SiteDeadLetter("alice@contoso.com", testkit.Site(2), "accessDenied", 3))
	s4 := testkit.PublishDeadLetter(t, js, testkit.InvalidDeadLetter("{not json", 4))
	// A gap, as a replay or purge leaves one.
	if err := store.Delete(t.Context(), s2); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour)
	tests := []struct {
		name string
		f    dlq.Filter
		want []uint64
	}{
		{"all", dlq.Filter{}, []uint64{s1, s3, s4}},
		{"code, any case", dlq.Filter{Code: "ACCESSDENIED"}, []uint64{s1, s3}},
		{"user and site (AND)", dlq.Filter{User: "Alice@Contoso.com", Site: testkit.Site(2)}, []uint64{s3}},
		{"seq range A = B", dlq.Filter{FirstSeq: s3, LastSeq: s3}, []uint64{s3}},
		{"seq range over the gap", dlq.Filter{FirstSeq: s1, LastSeq: s3}, []uint64{s1, s3}},
		{"since", dlq.Filter{After: future}, nil},
		{"older than", dlq.Filter{Before: future}, []uint64{s1, s3, s4}},
		{"code invalidEvent", dlq.Filter{Code: event.CodeInvalidEvent}, []uint64{s4}},
	}
	for _, tt := range tests {
		if got := seqs(scanAll(t, store, tt.f)); !equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	if _, err := store.Get(t.Context(), s2); err == nil {
		t.Errorf("get deleted %d: got nil error, want not found", s2)
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseReplayCount(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", 0}, {"1", 1}, {" 2 ", 2}, {"007", 7}, {"-1", 0}, {"x", 0}, {"1.5", 0}, {"0x10", 0},
		{"99999999999999999999999", dlq.MaxReplayCount}, {"1000001", dlq.MaxReplayCount},
	}
	for _, tt := range tests {
		if got := dlq.ParseReplayCount(tt.in); got != tt.want {
			t.Errorf("ParseReplayCount(%q): got %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseSeqRangeAndAge(t *testing.T) {
	ranges := []struct {
		in          string
		first, last uint64
		ok          bool
	}{
		{"3-7", 3, 7, true}, {"5-5", 5, 5, true}, {"9", 9, 9, true},
		{"7-3", 0, 0, false}, {"0-3", 0, 0, false}, {"a-b", 0, 0, false}, {"", 0, 0, false},
	}
	for _, tt := range ranges {
		a, b, err := dlq.ParseSeqRange(tt.in)
		if (err == nil) != tt.ok || a != tt.first || b != tt.last {
			t.Errorf("ParseSeqRange(%q): got %d, %d, %v; want %d, %d, ok %v", tt.in, a, b, err, tt.first, tt.last, tt.ok)
		}
	}
	ages := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"2h", 2 * time.Hour, true}, {"7d", 7 * 24 * time.Hour, true}, {"0s", 0, false}, {"-1h", 0, false}, {"soon", 0, false},
	}
	for _, tt := range ages {
		got, err := dlq.ParseAge(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseAge(%q): got %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// requests are the replayed requests in the request stream, by the
// dead-letter sequence they replay.
func requests(t *testing.T, js jetstream.JetStream) map[uint64][]event.Request {
	t.Helper()
	out := map[uint64][]event.Request{}
	for _, m := range testkit.StreamMessages(t, js, testkit.RequestStream) {
		of, err := strconv.ParseUint(m.Header.Get(dlq.HeaderReplayOf), 10, 64)
		if err != nil {
			t.Fatalf("request %d: %s: %v", m.Sequence, dlq.HeaderReplayOf, err)
		}
		var r event.Request
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		out[of] = append(out[of], r)
	}
	return out
}

// TestReplayInterruptedAndResumed: a run stopped between publishing and
// deleting, and one cancelled after k records, lose nothing, and the run
// that resumes publishes nothing twice.
func TestReplayInterruptedAndResumed(t *testing.T) {
	t.Parallel()
	js, store := world(t)
	const n, k = 6, 2
	for i := range n {
		testkit.PublishDeadLetter(t, js, testkit.SiteDeadLetter(testkit.User(i), testkit.Site(i), "accessDenied", uint64(i+1)))
	}
	r, err := dlq.NewReplayer(store, js, testkit.RequestStream, dlq.ReplaySubject)
	if err != nil {
		t.Fatal(err)
	}
	recs := scanAll(t, store, dlq.Filter{})
	// A crash after the PubAck and before the delete.
	if dup, err := r.Publish(t.Context(), recs[0]); err != nil || dup {
		t.Fatalf("publish first: got duplicate %v, %v; want false, nil", dup, err)
	}
	// Ctrl-C after k more.
	ctx, cancel := context.WithCancel(t.Context())
	done, err := r.ReplayAll(ctx, recs[1:], func(dlq.Record, bool) {
		if testkit.StreamMsgs(js, testkit.RequestStream) >= k+1 {
			cancel()
		}
	})
	if err == nil || done != k {
		t.Fatalf("cancelled run: got %d done, %v; want %d and an error", done, err, k)
	}
	for seq := range requests(t, js) {
		if _, err := store.Get(t.Context(), seq); err == nil && seq != recs[0].Seq {
			t.Errorf("dead letter %d both republished and still stored", seq)
		}
	}
	// Resume: everything left, recs[0] included.
	left := scanAll(t, store, dlq.Filter{})
	if got, want := len(left), n-k; got != want {
		t.Fatalf("left after interruption: got %d, want %d", got, want)
	}
	dups := 0
	if _, err := r.ReplayAll(t.Context(), left, func(_ dlq.Record, dup bool) {
		if dup {
			dups++
		}
	}); err != nil {
		t.Fatalf("resumed run: %v", err)
	}
	if dups != 1 {
		t.Errorf("resumed run: got %d duplicates, want 1 (the record published before the crash)", dups)
	}
	if got := scanAll(t, store, dlq.Filter{}); len(got) != 0 {
		t.Errorf("dead letters left: got %v, want none", seqs(got))
	}
	got := requests(t, js)
	for _, rec := range recs {
		reqs := got[rec.Seq]
		if len(reqs) != 1 {
			t.Errorf("dead letter %d: got %d requests, want exactly 1", rec.Seq, len(reqs))
			continue
		}
		want := event.Request{UserID: rec.Letter.UserID, Action: rec.Letter.Action, SiteIDs: []string{rec.Letter.SiteID}, ID: "req-1", Source: "test"}
		if g, w := must(json.Marshal(reqs[0])), must(json.Marshal(want)); string(g) != string(w) {
			t.Errorf("dead letter %d: got request %s, want %s", rec.Seq, g, w)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestPlanReplay(t *testing.T) {
	valid := dlq.Record{Seq: 1, Letter: testkit.SiteDeadLetter("a@contoso.com", testkit.Site(1), "accessDenied", 1)}
	capped := valid
	capped.Seq, capped.Letter.Replays = 2, 3
	invalid := dlq.Record{Seq: 3, Letter: testkit.InvalidDeadLetter("x", 3)}
	badUser := valid
	badUser.Seq, badUser.Letter.UserID = 4, ""
	recs := []dlq.Record{valid, capped, invalid, badUser}
	tests := []struct {
		name                                    string
		force                                   bool
		replay, invalidN, cappedN, unreplayable []uint64
	}{
		{"cap refuses", false, []uint64{1}, []uint64{3}, []uint64{2}, []uint64{4}},
		{"force replays capped", true, []uint64{1, 2}, []uint64{3}, nil, []uint64{4}},
	}
	for _, tt := range tests {
		p := dlq.PlanReplay(recs, 3, tt.force)
		for _, c := range []struct {
			what      string
			got, want []uint64
		}{{"replay", seqs(p.Replay), tt.replay}, {"invalid", seqs(p.Invalid), tt.invalidN}, {"capped", seqs(p.Capped), tt.cappedN},
			{"unreplayable", seqs(p.Unreplayable), tt.unreplayable}} {
			if !equal(c.got, c.want) {
				t.Errorf("%s: %s: got %v, want %v", tt.name, c.what, c.got, c.want)
			}
		}
	}
}
