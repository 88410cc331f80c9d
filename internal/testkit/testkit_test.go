package testkit

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
)

func TestCheck(t *testing.T) {
	u, s1, s2 := "ann@contoso.com", Site(1), Site(2)
	eff := func(site, op string) graphsim.Effect { return graphsim.Effect{User: u, Site: site, Op: op} }
	deadFor := func(seq uint64, site string) dlq.Stored {
		return dlq.Stored{DeadLetter: event.DeadLetter{SiteID: site, Origin: event.Origin{Stream: RequestStream, Sequence: seq}}}
	}
	tests := []struct {
		name     string
		sent     []Sent
		followed []Pair
		effects  []graphsim.Effect
		letters  []dlq.Stored
		wrong    int
		order    int
		dups     int
	}{
		{name: "follow applied",
			sent:     []Sent{{Seq: 1, User: u, Action: event.Follow, Sites: []string{s1}}},
			followed: []Pair{{u, s1}}, effects: []graphsim.Effect{eff(s1, "follow")}},
		{name: "follow then unfollow ends unfollowed",
			sent:    []Sent{{Seq: 1, User: u, Action: event.Follow, Sites: []string{s1}}, {Seq: 2, User: u, Action: event.Unfollow, Sites: []string{s1}}},
			effects: []graphsim.Effect{eff(s1, "follow"), eff(s1, "unfollow")}},
		{name: "an old follow re-applied after the unfollow",
			sent:     []Sent{{Seq: 1, User: u, Action: event.Follow, Sites: []string{s1}}, {Seq: 2, User: u, Action: event.Unfollow, Sites: []string{s1}}},
			followed: []Pair{{u, s1}}, effects: []graphsim.Effect{eff(s1, "follow"), eff(s1, "unfollow"), eff(s1, "follow")},
			wrong: 1, order: 1},
		{name: "re-asserting the same request is fine",
			sent:    []Sent{{Seq: 1, User: u, Action: event.Follow, Sites: []string{s1}}, {Seq: 2, User: u, Action: event.Unfollow, Sites: []string{s1}}},
			effects: []graphsim.Effect{eff(s1, "follow"), eff(s1, "follow"), eff(s1, "unfollow"), eff(s1, "unfollow")}},
		{name: "superseded follow never sent",
			sent:    []Sent{{Seq: 1, User: u, Action: event.Follow, Sites: []string{s1}}, {Seq: 2, User: u, Action: event.Unfollow, Sites: []string{s1}}},
			effects: []graphsim.Effect{eff(s1, "unfollow")}},
		{name: "dead-lettered last request does not count",
			sent:     []Sent{{Seq: 1, User: u, Action: event.Follow, Sites: []string{s1, s2}}, {Seq: 2, User: u, Action: event.Unfollow, Sites: []string{s1}}},
			followed: []Pair{{u, s1}, {u, s2}}, effects: []graphsim.Effect{eff(s1, "follow"), eff(s2, "follow")},
			letters: []dlq.Stored{deadFor(2, s1)}},
		{name: "no surviving request ends unfollowed",
			sent:     []Sent{{Seq: 5, User: u, Action: event.Follow, Sites: []string{s1}}},
			followed: []Pair{{u, s1}}, letters: []dlq.Stored{deadFor(5, s1)}, wrong: 1, order: 0},
		{name: "dead letter stored twice",
			sent:    []Sent{{Seq: 5, User: u, Action: event.Follow, Sites: []string{s1}}},
			letters: []dlq.Stored{deadFor(5, s1), deadFor(5, strings.ToUpper(s1))}, dups: 1},
		{name: "followed without any request",
			followed: []Pair{{u, s2}}, wrong: 1},
		{name: "effect of an unknown pair",
			effects: []graphsim.Effect{eff(s2, "follow")}, order: 1},
		{name: "user case does not matter",
			sent:     []Sent{{Seq: 1, User: "Ann@Contoso.COM", Action: event.Follow, Sites: []string{strings.ToUpper(s1)}}},
			followed: []Pair{{u, s1}}, effects: []graphsim.Effect{eff(s1, "follow")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			followed := map[Pair]bool{}
			for _, p := range tt.followed {
				followed[p] = true
			}
			v := check(tt.sent, followed, tt.effects, tt.letters)
			if len(v.Wrong) != tt.wrong || len(v.Order) != tt.order || len(v.Duplicates) != tt.dups {
				t.Errorf("got wrong %d %q, order %d %q, duplicates %d %q; want %d, %d, %d",
					len(v.Wrong), v.Wrong, len(v.Order), v.Order, len(v.Duplicates), v.Duplicates, tt.wrong, tt.order, tt.dups)
			}
			if got, want := v.OK(), tt.wrong+tt.order+tt.dups == 0; got != want {
				t.Errorf("OK: got %v, want %v", got, want)
			}
		})
	}
}

func TestNATSRestartKeepsStore(t *testing.T) {
	t.Parallel()
	n := StartNATS(t, NATSOptions{})
	_, js := Connect(t, n.URL())
	PrecreateStreams(t, js, Spec(t, nil), 1)
	seqs := PublishAll(t, js, [][]byte{RequestBody("ann", event.Follow, Site(1)), RequestBody("bob", event.Unfollow, Site(2))})
	if !slices.Equal(seqs, []uint64{1, 2}) {
		t.Errorf("sequences: got %v, want [1 2]", seqs)
	}
	url := n.URL()
	n.Restart()
	if n.URL() != url {
		t.Errorf("URL after restart: got %s, want %s", n.URL(), url)
	}
	Eventually(t, time.Minute, "both requests back after the restart", func() bool { return StreamMsgs(js, RequestStream) == 2 })
	if got := Publish(t, js, "cat", event.Follow, Site(3)); got != 3 {
		t.Errorf("next sequence: got %d, want 3", got)
	}
	if got := DeadLetters(t, js); len(got) != 0 {
		t.Errorf("dead letters: got %d, want 0", len(got))
	}
}

func TestClusterLeaderMoves(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, 3)
	if got := strings.Count(c.URLs(), ","); got != 2 {
		t.Errorf("URLs: got %q, want three", c.URLs())
	}
	_, js := Connect(t, c.URLs())
	PrecreateStreams(t, js, Spec(t, nil), 3)
	Publish(t, js, "ann", event.Follow, Site(1))
	leader := c.StreamLeader(t, RequestStream)
	c.Stop(leader)
	Eventually(t, 2*time.Minute, "another stream leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, RequestStream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.Cluster != nil && info.Cluster.Leader != "" && c.index(info.Cluster.Leader) != leader
	})
	Publish(t, js, "bob", event.Follow, Site(2))
	c.Restart(leader)
	c.WaitStreamCurrent(t, RequestStream)
	if got := StreamMsgs(js, RequestStream); got != 2 {
		t.Errorf("requests: got %d, want 2", got)
	}
	if got := c.ConsumerLeader(t, RequestStream, ConsumerName); got < 0 || got > 2 {
		t.Errorf("consumer leader: got %d, want a node index", got)
	}
}
