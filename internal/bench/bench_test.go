package bench

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/natsembed"
	"github.com/sitefollow/sitefollow/internal/provision"
)

func TestParseAckSubject(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		want    AckReply
		wantErr bool
	}{
		{name: "v1", subject: "$JS.ACK.SITEFOLLOW.sitefollow.1.42.7.1732266000000000000.99",
			want: AckReply{Stream: "SITEFOLLOW", Consumer: "sitefollow", Delivered: 1, StreamSeq: 42, ConsumerSeq: 7}},
		{name: "v2 with token", subject: "$JS.ACK._.ACCHASH.SITEFOLLOW.sitefollow.3.1000000.12.1732266000000000000.0.abc",
			want: AckReply{Stream: "SITEFOLLOW", Consumer: "sitefollow", Delivered: 3, StreamSeq: 1000000, ConsumerSeq: 12}},
		{name: "v2 without token", subject: "$JS.ACK.hub.ACCHASH.S.c.2.5.6.1732266000000000000.0",
			want: AckReply{Stream: "S", Consumer: "c", Delivered: 2, StreamSeq: 5, ConsumerSeq: 6}},
		{name: "v2 with more tokens", subject: "$JS.ACK.hub.ACCHASH.S.c.2.5.6.1732266000000000000.0.tok.more",
			want: AckReply{Stream: "S", Consumer: "c", Delivered: 2, StreamSeq: 5, ConsumerSeq: 6}},
		{name: "ten tokens", subject: "$JS.ACK.x.S.c.2.5.6.1732266000000000000.0", wantErr: true},
		{name: "too short", subject: "$JS.ACK.S.c.1.2.3", wantErr: true},
		{name: "not an ack", subject: "$JS.API.S.c.1.2.3.4.5", wantErr: true},
		{name: "sequence not a number", subject: "$JS.ACK.S.c.1.x.3.4.5", wantErr: true},
		{name: "plain subject", subject: "sitefollow.requests.app", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAckSubject(tt.subject)
			if tt.wantErr {
				if !errors.Is(err, errAckSubject) {
					t.Fatalf("error: got %v, want errAckSubject", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("error: got %v, want none", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseAckKind(t *testing.T) {
	tests := []struct {
		body string
		want ackKind
	}{
		{"+ACK", kindAck},
		{"", kindAck},
		{"+NXT 10", kindAck},
		{"-NAK", kindNak},
		{`-NAK {"delay":5000000000}`, kindNak},
		{"+WPI", kindProgress},
		{"+TERM", kindTerm},
		{"+TERM bad event", kindTerm},
		{"hello", kindOther},
	}
	for _, tt := range tests {
		if got := parseAckKind([]byte(tt.body)); got != tt.want {
			t.Errorf("parseAckKind(%q): got %d, want %d", tt.body, got, tt.want)
		}
	}
}

func ms(n ...int) []time.Duration {
	out := make([]time.Duration, len(n))
	for i, v := range n {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		values []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value", ms(7), 99, 7 * time.Millisecond},
		{"median of odd count", ms(5, 1, 3), 50, 3 * time.Millisecond},
		{"median of even count is the lower", ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the maximum", ms(hundred...), 100, 100 * time.Millisecond},
		{"p99 of ten is the maximum", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"tiny p is the minimum", ms(9, 8, 7), 0.1, 7 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(sortedDurations(tt.values), tt.p); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIdealCalls(t *testing.T) {
	site := func(n int) string {
		return fmt.Sprintf("contoso.sharepoint.com,%08x-1d2e-4f60-8a9b-0c1d2e3f4a5b,712a596e-90a1-49e3-9b48-bfa80bee8740", n)
	}
	sites := func(from, to int) []string {
		var out []string
		for n := from; n <= to; n++ {
			out = append(out, site(n))
		}
		return out
	}
	req := func(user string, a event.Action, ids ...string) event.Request {
		return event.Request{UserID: user, Action: a, SiteIDs: ids}
	}
	tests := []struct {
		name  string
		reqs  []event.Request
		batch int
		want  int
	}{
		{"nothing", nil, 20, 0},
		{"one site", []event.Request{req("a", event.Follow, site(1))}, 20, 1},
		{"exactly one batch over several events", []event.Request{
			req("a", event.Follow, sites(1, 5)...), req("a", event.Follow, sites(6, 20)...)}, 20, 1},
		{"one over a batch", []event.Request{req("a", event.Follow, sites(1, 21)...)}, 20, 2},
		{"sixty sites", []event.Request{req("a", event.Follow, sites(1, 60)...)}, 20, 3},
		{"actions count apart", []event.Request{
			req("a", event.Follow, sites(1, 3)...), req("a", event.Unfollow, sites(4, 5)...)}, 20, 2},
		{"users count apart", []event.Request{
			req("a", event.Follow, site(1)), req("b", event.Follow, site(1))}, 20, 2},
		{"repeated sites count once", []event.Request{
			req("a", event.Follow, sites(1, 20)...), req("a", event.Follow, sites(1, 20)...)}, 20, 1},
		{"users and sites compare case-insensitively", []event.Request{
			req("Ann@Contoso.com", event.Follow, strings.ToUpper(site(1))), req("ann@contoso.com", event.Follow, site(1))}, 20, 1},
		{"batch of one", []event.Request{req("a", event.Follow, sites(1, 3)...)}, 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := idealCalls(tt.reqs, tt.batch); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name        string
		n           int
		first, last time.Time
		want        float64
	}{
		{"eleven events over a second", 11, t0, t0.Add(time.Second), 10},
		{"one event", 1, t0, t0, 0},
		{"no span", 5, t0, t0, 0},
	}
	for _, tt := range tests {
		if got := rate(tt.n, tt.first, tt.last); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestEarlyAfterAnswer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(msec int) time.Time { return t0.Add(time.Duration(msec) * time.Millisecond) }
	ok := func(msec int) graphsim.Call { return graphsim.Call{At: at(msec), Status: http.StatusOK} }
	// throttled arrives at msec and is answered 50 ms later with a wait.
	throttled := func(msec, waitMs int) graphsim.Call {
		wait := time.Duration(waitMs) * time.Millisecond
		return graphsim.Call{At: at(msec), Status: http.StatusTooManyRequests, RetryAfter: wait,
			Answered: at(msec + 50), NotBefore: at(msec + 50).Add(wait)}
	}
	const margin = 5 * time.Millisecond
	tests := []struct {
		name  string
		calls []graphsim.Call
		want  int
	}{
		{"no throttling", []graphsim.Call{ok(0), ok(1), ok(2)}, 0},
		// The 429 arrives at 0, is answered at 50 with a 100 ms wait: the
		// deadline is 150.
		{"in flight when answered", []graphsim.Call{throttled(0, 100), ok(52)}, 0},
		{"sent after the answer, before the deadline", []graphsim.Call{throttled(0, 100), ok(60), ok(149)}, 2},
		{"after the deadline", []graphsim.Call{throttled(0, 100), ok(150), ok(200)}, 0},
		{"the later deadline wins", []graphsim.Call{throttled(0, 300), throttled(10, 20), ok(200)}, 1},
		{"a 429 without Retry-After sets no deadline", []graphsim.Call{{At: at(0), Status: http.StatusTooManyRequests, Answered: at(50)}, ok(60)}, 0},
		{"answered late: calls before the answer are in flight", []graphsim.Call{
			{At: at(0), Status: http.StatusTooManyRequests, RetryAfter: 100 * time.Millisecond, Answered: at(90), NotBefore: at(190)},
			ok(60), ok(94), ok(96)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := earlyAfterAnswer(tt.calls, margin); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestThrottleWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	call := func(sec, status, sites int) graphsim.Call {
		return graphsim.Call{At: t0.Add(time.Duration(sec) * time.Second), Status: status, SiteIDs: make([]string, sites)}
	}
	calls := []graphsim.Call{
		call(0, 200, 20), // before the window
		call(1, 200, 20),
		call(2, 429, 20),
		call(3, 204, 5),
		call(3, 207, 20),
		call(4, 200, 20), // at the end: outside
	}
	refused := call(2, 503, 20) // a budget answering 503
	refused.Throttled = true
	calls = append(calls, refused, call(3, 0, 20)) // and one never answered
	got := throttleWindow(calls, t0.Add(time.Second), t0.Add(4*time.Second))
	want := windowStats{calls: 6, throttled: 2, multiStatus: 1, appliedSites: 25, admitted: 3}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    procStatus
		wantErr bool
	}{
		{name: "running", status: "Name:\tconsumer\nVmPeak:\t  900 kB\nVmHWM:\t   52000 kB\nVmRSS:\t   48000 kB\nThreads:\t9\n",
			want: procStatus{rss: 48000 << 10, hwm: 52000 << 10}},
		{name: "zombie has no memory lines", status: "Name:\tconsumer\nState:\tZ (zombie)\n", wantErr: true},
		{name: "malformed", status: "VmHWM:\tlots\nVmRSS:\t1 kB\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus(strings.NewReader(tt.status))
			if (err != nil) != tt.wantErr {
				t.Fatalf("error: got %v, want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAggregationRequests(t *testing.T) {
	pool := sitePool()
	reqs := aggregationRequests(200, pool)
	again := aggregationRequests(200, pool)
	if fmt.Sprint(reqs) != fmt.Sprint(again) {
		t.Fatal("two generations differ; want the same requests from the fixed seed")
	}
	follows := map[string]map[string]bool{}
	for _, r := range reqs {
		if n := len(r.SiteIDs); n < 1 || n > 5 {
			t.Fatalf("event with %d sites, want 1..5: %+v", n, r)
		}
		if r.Action == event.Follow {
			if follows[r.UserID] == nil {
				follows[r.UserID] = map[string]bool{}
			}
			for _, s := range r.SiteIDs {
				follows[r.UserID][s] = true
			}
		}
	}
	if len(follows) != 200 {
		t.Errorf("users following: got %d, want 200", len(follows))
	}
	for u, sites := range follows {
		if n := len(sites); n < 1 || n > 60 {
			t.Errorf("%s follows %d sites, want 1..60", u, n)
		}
	}
}

func TestShortCount(t *testing.T) {
	tests := []struct {
		n    int
		want string
	}{{1_000_000, "1M"}, {100_000, "100k"}, {1_000, "1k"}, {1_500, "1500"}, {30, "30"}}
	for _, tt := range tests {
		if got := shortCount(tt.n); got != tt.want {
			t.Errorf("shortCount(%d): got %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestSelectScenarios(t *testing.T) {
	got, err := selectScenarios(new(runner).scenarios(), []string{"backlog", "ceiling"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].name != "ceiling" || got[1].name != "backlog" {
		t.Errorf("got %v, want ceiling then backlog (run order)", got)
	}
	if _, err := selectScenarios(new(runner).scenarios(), []string{"ceiling", "speed"}); !errors.Is(err, ErrUnknownScenario) {
		t.Errorf("error: got %v, want ErrUnknownScenario", err)
	}
}

// TestAckLogSeesAcksFromOutside checks the measurement the benchmark rests
// on: a plain subscription sees another connection's acks, NAKs and
// progress, and maps each ack to the stream sequence its publish got.
func TestAckLogSeesAcksFromOutside(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	connect := func() *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	js, err := jetstream.New(connect(), jetstream.WithPublishAsyncMaxPending(maxPublishPending))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	spec := provision.Spec{Stream: "SITEFOLLOW", Subjects: []string{"sitefollow.requests.>"}, Consumer: "sitefollow",
		AckWait: time.Minute, MaxDeliver: 5, MaxAckPending: 100, DLQStream: "SITEFOLLOW_DLQ", DLQSubjects: []string{"sitefollow.dlq.>"},
		StateBucket: "SITEFOLLOW_STATE", LeaseTTL: time.Minute}
	if _, err := provision.Apply(ctx, js, spec); err != nil {
		t.Fatal(err)
	}
	acks, err := watchAcks(connect(), "SITEFOLLOW", "sitefollow")
	if err != nil {
		t.Fatal(err)
	}
	pubs := &pubLog{}
	if err := publishAll(ctx, js, pubs, 3, roundRobin(sitePool(), 2)); err != nil {
		t.Fatal(err)
	}
	if got := pubs.count(); got != 3 {
		t.Fatalf("publishes recorded: got %d, want 3", got)
	}

	// The other "consumer": its own connection, as the child process has.
	other, err := jetstream.New(connect())
	if err != nil {
		t.Fatal(err)
	}
	oc, err := other.Consumer(ctx, "SITEFOLLOW", "sitefollow")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := oc.Fetch(3, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for m := range batch.Messages() {
		i++
		var err error
		switch i {
		case 1:
			if err = m.InProgress(); err == nil {
				err = m.Ack()
			}
		case 2:
			err = m.Nak()
		default:
			err = m.DoubleAck(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(10 * time.Second)
	var got ackCounts
	for {
		got = acks.snapshot()
		if got.Acks == 2 && got.Naks == 1 && got.Progress == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got.Acks != 2 || got.Naks != 1 || got.Progress != 1 || got.Distinct != 2 || got.Unparsed != 0 {
		t.Fatalf("counts: got %+v, want 2 acks (2 distinct), 1 NAK, 1 progress", got)
	}
	for _, seq := range []uint64{1, 3} {
		acked, ok := acks.ackedAt(seq)
		if !ok {
			t.Fatalf("sequence %d: no ack recorded", seq)
		}
		pubs.each(func(s uint64, at time.Time) {
			if s == seq && acked.Before(at) {
				t.Errorf("sequence %d acked at %v, before its publish at %v", seq, acked, at)
			}
		})
	}
	if _, ok := acks.ackedAt(2); ok {
		t.Error("sequence 2 was NAKed, yet an ack is recorded")
	}
	if n, err := acks.dropped(); err != nil || n != 0 {
		t.Errorf("dropped: got %d, %v; want 0, nil", n, err)
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v): got %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestSummariseCalls(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(msec int) time.Time { return t0.Add(time.Duration(msec) * time.Millisecond) }
	// call arrives at from and is answered at to (0: never answered).
	call := func(user string, from, to, status, sites int) graphsim.Call {
		c := graphsim.Call{UserID: user, At: at(from), Status: status, SiteIDs: make([]string, sites)}
		if to > 0 {
			c.Answered = at(to)
		}
		return c
	}
	calls := []graphsim.Call{
		call("a", 0, 50, http.StatusOK, 20),
		call("b", 10, 60, http.StatusOK, 5),
		call("A", 40, 90, http.StatusOK, 3),                // a's first call still unanswered: overlap
		call("a", 95, 145, http.StatusTooManyRequests, 10), // after both: none
		call("b", 60, 110, http.StatusNoContent, 2),        // at the answer: none
		call("c", 0, 0, 0, 1),                              // never answered
		call("c", 500, 550, http.StatusOK, 1),              // so this overlaps
	}
	got := summariseCalls(calls)
	want := scaleoutCalls{calls: 7, sites: 42, largest: 20, throttled: 1, applied: 31, overlaps: 2}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestBigEvent(t *testing.T) {
	req := roundRobin(sitePool(), 3)(4)
	tests := []struct {
		name    string
		size    int
		wantErr bool
	}{
		{name: "1 MB", size: bigEventBytes},
		{name: "just fits", size: 200},
		{name: "too small", size: 20, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := bigEvent(req, tc.size)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if len(b) != tc.size {
				t.Errorf("got %d bytes, want %d", len(b), tc.size)
			}
			got, err := event.Decoder{}.Decode(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got.UserID != req.UserID || len(got.SiteIDs) != 1 || got.SiteIDs[0] != req.SiteIDs[0] {
				t.Errorf("got %+v, want %+v", got, req)
			}
		})
	}
}
