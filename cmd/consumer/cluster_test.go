package main

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// TestClusterFailover runs consumers against a three-node JetStream cluster
// with R3 streams created up front (SITEFOLLOW_PROVISION=false) and NATS_URL
// listing every node. Mid-run the stream leader's node is stopped and
// restarted, then the consumer leader's: nothing may be lost, and the
// invariant must hold, acks lost in the failover included.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		consumers int
		chaos     bool
	}{
		{name: "one consumer", consumers: 1},
		{name: "three consumers with chaos", consumers: 3, chaos: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			seed := *soakSeed
			if seed == 0 {
				seed = time.Now().UnixNano() % 1_000_000_007
			}
			t.Logf("seed %d (replay with -soak.seed=%d)", seed, seed)
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0xc1a5))
			c := testkit.StartCluster(t, 3)
			w := newWorld(t, c.URLs(), 8, map[string]string{"SITEFOLLOW_PROVISION": "false"})
			testkit.PrecreateStreams(t, w.js, testkit.Spec(t, w.settings), 3)
			w.startPulling("replica", tt.consumers)
			if tt.chaos {
				w.sim.SetChaos(soakChaos(seed))
			}
			// phase publishes 60 random requests one by one (retried through
			// leader elections) and waits until half of them are acknowledged,
			// so that the next failure hits work in flight.
			phase := func(what string) {
				t.Helper()
				reqs, _, _ := randomRequests(rng, 60, 20, 8)
				for _, r := range reqs {
					w.publish(r.User, r.Action, r.Sites...)
				}
				acked := len(w.sent) - 30
				testkit.Eventually(t, 2*time.Minute, "half of the requests acknowledged "+what, func() bool {
					acks, _, _ := w.acks.Counts()
					return acks >= acked
				})
			}
			phase("before any failure")
			leader := c.StreamLeader(t, testkit.RequestStream)
			t.Logf("stopping node %d, the stream leader", leader)
			c.Stop(leader)
			phase("while the stream leader's node is down")
			c.Restart(leader)
			c.WaitStreamCurrent(t, testkit.RequestStream)
			phase("after the stream leader's node came back")
			cl := c.ConsumerLeader(t, testkit.RequestStream, testkit.ConsumerName)
			t.Logf("stopping node %d, the consumer leader", cl)
			c.Stop(cl)
			phase("while the consumer leader's node is down")
			c.Restart(cl)
			c.WaitStreamCurrent(t, testkit.RequestStream)
			phase("after the consumer leader's node came back")
			w.sim.SetChaos(graphsim.Chaos{})
			w.verify()
		})
	}
}
