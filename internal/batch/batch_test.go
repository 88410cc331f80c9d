package batch

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func site(n int) string {
	return fmt.Sprintf("contoso.sharepoint.com,00000000-0000-0000-0000-%012d,11111111-1111-1111-1111-111111111111", n)
}

// summary renders a batch as "user follow:s1,s2 unfollow:s3" for comparison.
func summary(t *testing.T, b *Batch[string]) string {
	t.Helper()
	var follow, unfollow []string
	for _, it := range b.Items {
		short := it.Site[strings.LastIndex(it.Site[:len(it.Site)-37], "-")+1 : len(it.Site)-37]
		if it.Action == event.Follow {
			follow = append(follow, strings.TrimLeft(short, "0"))
		} else {
			unfollow = append(unfollow, strings.TrimLeft(short, "0"))
		}
	}
	return fmt.Sprintf("%s follow:%s unfollow:%s", b.UserID, strings.Join(follow, ","), strings.Join(unfollow, ","))
}

func TestFlushTriggers(t *testing.T) {
	type add struct {
		user   string
		action event.Action
		sites  []int
		at     time.Duration
	}
	tests := []struct {
		name string
		adds []add
		now  time.Duration
		want []string
	}{
		{
			name: "below max waits for linger",
			adds: []add{{"u1", event.Follow, []int{1, 2}, 0}},
			now:  999 * time.Millisecond,
			want: nil,
		},
		{
			name: "linger expiry flushes",
			adds: []add{{"u1", event.Follow, []int{1, 2}, 0}},
			now:  time.Second,
			want: []string{"u1 follow:1,2 unfollow:"},
		},
		{
			name: "max sites flushes at once across events",
			adds: []add{{"u1", event.Follow, []int{1, 2}, 0}, {"u1", event.Follow, []int{3}, 0}},
			now:  0,
			want: []string{"u1 follow:1,2,3 unfollow:"},
		},
		{
			name: "fullness is per action: each action is its own call",
			adds: []add{{"u1", event.Follow, []int{1, 2}, 0}, {"u1", event.Unfollow, []int{3}, 0}},
			now:  0,
			want: nil,
		},
		{
			name: "one full action takes the other along",
			adds: []add{{"u1", event.Unfollow, []int{4}, 0}, {"u1", event.Follow, []int{1, 2, 3}, 0}},
			now:  0,
			want: []string{"u1 follow:1,2,3 unfollow:4"},
		},
		{
			name: "linger counts from first pending site",
			adds: []add{{"u1", event.Follow, []int{1}, 0}, {"u1", event.Unfollow, []int{2}, 900 * time.Millisecond}},
			now:  time.Second,
			want: []string{"u1 follow:1 unfollow:2"},
		},
		{
			name: "users are separate",
			adds: []add{{"u1", event.Follow, []int{1}, 0}, {"u2", event.Follow, []int{2}, 500 * time.Millisecond}},
			now:  time.Second,
			want: []string{"u1 follow:1 unfollow:"},
		},
		{
			name: "user ids compare case-insensitively",
			adds: []add{{"Ann@Contoso.com", event.Follow, []int{1}, 0}, {"ann@contoso.com", event.Follow, []int{2}, 0}},
			now:  time.Second,
			want: []string{"Ann@Contoso.com follow:1,2 unfollow:"},
		},
		{
			name: "latest request per site wins",
			adds: []add{{"u1", event.Follow, []int{1, 2}, 0}, {"u1", event.Unfollow, []int{1}, 0}},
			now:  time.Second,
			want: []string{"u1 follow:2 unfollow:1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New[string](3, time.Second)
			for i, ad := range tt.adds {
				var sites []string
				for _, n := range ad.sites {
					sites = append(sites, site(n))
				}
				a.Add(ad.user, ad.action, sites, uint64(i+1), fmt.Sprint(i), t0.Add(ad.at))
			}
			var got []string
			for {
				b, ok := a.Next(t0.Add(tt.now))
				if !ok {
					break
				}
				got = append(got, summary(t, b))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("batches: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSupersededSettlesWithWinner(t *testing.T) {
	tests := []struct {
		name        string
		firstSeq    uint64
		secondSeq   uint64
		wantAction  event.Action
		winnerRetry bool
		wantDone    []Done[string]
	}{
		{"follow then unfollow ends unfollowed", 1, 2, event.Unfollow, false,
			[]Done[string]{{Msg: "second"}, {Msg: "first"}}},
		{"redelivered older request loses to newer pending one", 5, 3, event.Follow, false,
			[]Done[string]{{Msg: "first"}, {Msg: "second"}}},
		{"superseded settles even when the winner must retry", 1, 2, event.Unfollow, true,
			[]Done[string]{{Msg: "second", Retry: true}, {Msg: "first"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New[string](20, time.Second)
			a.Add("u1", event.Follow, []string{site(1)}, tt.firstSeq, "first", t0)
			a.Add("u1", event.Unfollow, []string{strings.ToUpper(site(1))}, tt.secondSeq, "second", t0)
			b, ok := a.Next(t0.Add(time.Second))
			if !ok {
				t.Fatal("no batch due")
			}
			if len(b.Items) != 1 || b.Items[0].Action != tt.wantAction {
				t.Fatalf("items: got %+v, want one %s", b.Items, tt.wantAction)
			}
			b.Items[0].Retry = tt.winnerRetry
			got := a.Complete(b, t0.Add(time.Second))
			if !slices.Equal(got, tt.wantDone) {
				t.Errorf("done: got %+v, want %+v", got, tt.wantDone)
			}
		})
	}
}

func TestMessageDoneOnlyWhenAllSitesSettled(t *testing.T) {
	a := New[string](2, time.Second)
	a.Add("u1", event.Follow, []string{site(1), site(2), site(3)}, 1, "m", t0)
	b1, ok := a.Next(t0)
	if !ok {
		t.Fatal("full batch not due")
	}
	if got := len(b1.Items); got != 2 {
		t.Fatalf("items: got %d, want 2 (one call's worth; the rest waits)", got)
	}
	b1.Items[1].Retry = true
	if got := a.Complete(b1, t0); len(got) != 0 {
		t.Fatalf("done after first batch: got %+v, want none (one site still pending)", got)
	}
	if _, ok := a.Next(t0.Add(999 * time.Millisecond)); ok {
		t.Fatal("leftover site sent before its linger expired")
	}
	b2, ok := a.Next(t0.Add(time.Second))
	if !ok {
		t.Fatal("leftover site not due after linger")
	}
	if got, want := summary(t, b2), "u1 follow:3 unfollow:"; got != want {
		t.Errorf("second batch: got %q, want %q", got, want)
	}
	got := a.Complete(b2, t0.Add(time.Second))
	want := []Done[string]{{Msg: "m", Retry: true}}
	if !slices.Equal(got, want) {
		t.Errorf("done: got %+v, want %+v", got, want)
	}
}

func TestBatchTakesOneCallPerAction(t *testing.T) {
	a := New[string](2, time.Second)
	a.Add("u1", event.Follow, []string{site(1), site(2), site(3)}, 1, "f", t0)
	a.Add("u1", event.Unfollow, []string{site(4)}, 2, "u", t0)
	b, ok := a.Next(t0)
	if !ok {
		t.Fatal("batch not due")
	}
	if got, want := summary(t, b), "u1 follow:1,2 unfollow:4"; got != want {
		t.Errorf("batch: got %q, want %q", got, want)
	}
	if got := len(b.Calls(2)); got != 2 {
		t.Errorf("calls: got %d, want 2", got)
	}
}

func TestOneBatchInFlightPerUser(t *testing.T) {
	a := New[string](2, time.Second)
	a.Add("u1", event.Follow, []string{site(1), site(2)}, 1, "m1", t0)
	b1, ok := a.Next(t0)
	if !ok {
		t.Fatal("first batch not due")
	}
	a.Add("u1", event.Unfollow, []string{site(1), site(3)}, 2, "m2", t0)
	if b, ok := a.Next(t0.Add(time.Hour)); ok {
		t.Fatalf("second batch taken while first in flight: %+v", b)
	}
	if got := a.Complete(b1, t0.Add(time.Hour)); !slices.Equal(got, []Done[string]{{Msg: "m1"}}) {
		t.Errorf("done after first: got %+v", got)
	}
	b2, ok := a.Next(t0.Add(time.Hour))
	if !ok {
		t.Fatal("second batch not due after first completed")
	}
	if got, want := summary(t, b2), "u1 follow: unfollow:1,3"; got != want {
		t.Errorf("second batch: got %q, want %q", got, want)
	}
	if got := a.Complete(b2, t0.Add(time.Hour)); !slices.Equal(got, []Done[string]{{Msg: "m2"}}) {
		t.Errorf("done after second: got %+v", got)
	}
	if sites, inFlight := a.Stats(); sites != 0 || inFlight != 0 {
		t.Errorf("stats: got %d sites, %d in flight, want 0, 0", sites, inFlight)
	}
}

func TestFlushAllAndDeadline(t *testing.T) {
	a := New[string](20, time.Second)
	if _, ok := a.Deadline(); ok {
		t.Error("deadline reported with nothing pending")
	}
	a.Add("u1", event.Follow, []string{site(1)}, 1, "m1", t0)
	a.Add("u2", event.Follow, []string{site(1)}, 2, "m2", t0.Add(time.Millisecond))
	if got, ok := a.Deadline(); !ok || !got.Equal(t0.Add(time.Second)) {
		t.Errorf("deadline: got %v %v, want %v", got, ok, t0.Add(time.Second))
	}
	a.FlushAll()
	n := 0
	for {
		if _, ok := a.Next(t0); !ok {
			break
		}
		n++
	}
	if n != 2 {
		t.Errorf("batches after FlushAll: got %d, want 2", n)
	}
}

func BenchmarkAddNext(b *testing.B) {
	sites := make([]string, 64)
	for i := range sites {
		sites[i] = site(i)
	}
	users := make([]string, 1000)
	for i := range users {
		users[i] = fmt.Sprintf("user%d@contoso.com", i)
	}
	a := New[int](20, time.Second)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		a.Add(users[i%len(users)], event.Follow, sites[i%len(sites):i%len(sites)+1], uint64(i), i, t0)
		if bt, ok := a.Next(t0); ok {
			a.Complete(bt, t0)
		}
	}
}

func TestDeadLetteredWinnerHandsOverToNewestLoser(t *testing.T) {
	a := New[string](20, time.Second)
	a.Add("u1", event.Follow, []string{site(1)}, 1, "oldest", t0)
	a.Add("u1", event.Unfollow, []string{site(1)}, 2, "middle", t0)
	a.Add("u1", event.Follow, []string{site(1), site(2)}, 3, "newest", t0)
	b, ok := a.Next(t0.Add(time.Second))
	if !ok {
		t.Fatal("no batch due")
	}
	for i := range b.Items {
		if b.Items[i].Site == site(1) {
			b.Items[i].Dead = true // Graph rejected the newest request for site 1
		}
	}
	if got, want := a.Complete(b, t0.Add(time.Second)), []Done[string]{{Msg: "newest"}}; !slices.Equal(got, want) {
		t.Fatalf("done: got %+v, want %+v (the losers wait for their own verdict)", got, want)
	}
	b2, ok := a.Next(t0.Add(time.Second))
	if !ok {
		t.Fatal("the heir is not due: it has waited since the first request")
	}
	if got, want := summary(t, b2), "u1 follow: unfollow:1"; got != want {
		t.Fatalf("heir batch: got %q, want %q (the newest request not dead-lettered)", got, want)
	}
	if got, want := a.Complete(b2, t0.Add(time.Second)), []Done[string]{{Msg: "middle"}, {Msg: "oldest"}}; !slices.Equal(got, want) {
		t.Errorf("done: got %+v, want %+v", got, want)
	}
}

func TestReturnedBatchWaitsAndMergesWithNewerRequests(t *testing.T) {
	a := New[string](20, time.Second)
	a.Add("u1", event.Follow, []string{site(1), site(2)}, 1, "m1", t0)
	b, ok := a.Next(t0.Add(time.Second))
	if !ok {
		t.Fatal("no batch due")
	}
	a.Add("u1", event.Unfollow, []string{site(2)}, 2, "m2", t0.Add(time.Second))
	notBefore := t0.Add(3 * time.Second)
	a.Return(b, notBefore)
	if _, ok := a.Next(notBefore.Add(-time.Millisecond)); ok {
		t.Fatal("returned batch taken before notBefore")
	}
	if got, ok := a.Deadline(); !ok || got.After(notBefore) {
		t.Errorf("deadline: got %v %v, want one no later than %v", got, ok, notBefore)
	}
	b2, ok := a.Next(notBefore)
	if !ok {
		t.Fatal("returned batch not due at notBefore")
	}
	if got, want := summary(t, b2), "u1 follow:1 unfollow:2"; got != want {
		t.Fatalf("batch after return: got %q, want %q (the newer unfollow supersedes the returned follow)", got, want)
	}
	if got, want := a.Complete(b2, notBefore), []Done[string]{{Msg: "m2"}, {Msg: "m1"}}; !slices.Equal(got, want) {
		t.Errorf("done: got %+v, want %+v", got, want)
	}
	if sites, inFlight := a.Stats(); sites != 0 || inFlight != 0 {
		t.Errorf("stats: got %d sites, %d in flight, want 0, 0", sites, inFlight)
	}
}

func TestSkippedItemsAreNotSentAndSettle(t *testing.T) {
	a := New[string](20, time.Second)
	a.Add("u1", event.Follow, []string{site(1), site(2)}, 10, "old", t0)
	b, ok := a.Next(t0.Add(time.Second))
	if !ok {
		t.Fatal("no batch due")
	}
	b.Items[0].Skip = true // a newer request for site 1 was applied elsewhere
	calls := b.Calls(20)
	if len(calls) != 1 || len(calls[0]) != 1 || calls[0][0].Site != site(2) {
		t.Fatalf("calls: got %v, want one call with site 2 alone", calls)
	}
	b.Items[0].Retry = true // ignored for a skipped item
	if got, want := a.Complete(b, t0.Add(time.Second)), []Done[string]{{Msg: "old"}}; !slices.Equal(got, want) {
		t.Errorf("done: got %+v, want %+v", got, want)
	}
}

func TestDeferredItemComesBackAloneAfterNotBefore(t *testing.T) {
	a := New[string](20, time.Second)
	a.Add("u1", event.Follow, []string{site(1), site(2)}, 1, "m", t0)
	b, ok := a.Next(t0.Add(time.Second))
	if !ok {
		t.Fatal("no batch due")
	}
	b.Items[0].Defer = true // a newer request for site 1 is in doubt
	b.NotBefore = t0.Add(3 * time.Second)
	if calls := b.Calls(20); len(calls) != 1 || len(calls[0]) != 1 || calls[0][0].Site != site(2) {
		t.Fatalf("calls: got %v, want site 2 alone", calls)
	}
	if got := a.Complete(b, t0.Add(time.Second)); len(got) != 0 {
		t.Fatalf("done: got %+v, want none (site 1 is still open)", got)
	}
	if _, ok := a.Next(b.NotBefore.Add(-time.Millisecond)); ok {
		t.Fatal("deferred item taken before NotBefore")
	}
	b2, ok := a.Next(b.NotBefore)
	if !ok {
		t.Fatal("deferred item not due at NotBefore")
	}
	if got, want := summary(t, b2), "u1 follow:1 unfollow:"; got != want {
		t.Fatalf("second batch: got %q, want %q", got, want)
	}
	if got, want := a.Complete(b2, b.NotBefore), []Done[string]{{Msg: "m"}}; !slices.Equal(got, want) {
		t.Errorf("done: got %+v, want %+v", got, want)
	}
}

func TestSecondDeliveryOfAMessageSharesItsFate(t *testing.T) {
	// The same message (sequence 7) delivered twice while the first
	// delivery was still held: if the batch sends it back, neither delivery
	// may be acknowledged, or the message would leave the stream unapplied.
	a := New[string](20, time.Second)
	a.Add("u1", event.Unfollow, []string{site(1)}, 7, "first delivery", t0)
	a.Add("u1", event.Unfollow, []string{site(1)}, 7, "second delivery", t0)
	b, ok := a.Next(t0.Add(time.Second))
	if !ok || len(b.Items) != 1 {
		t.Fatalf("batch: got %+v, want one item", b)
	}
	b.Items[0].Retry = true
	got := a.Complete(b, t0.Add(time.Second))
	want := []Done[string]{{Msg: "first delivery", Retry: true}, {Msg: "second delivery", Retry: true}}
	if !slices.Equal(got, want) {
		t.Errorf("done: got %+v, want %+v", got, want)
	}
}
