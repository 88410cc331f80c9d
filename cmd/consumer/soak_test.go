package main

import (
	"flag"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// Soak flags, parsed by go test: go test ./cmd/consumer -run TestSoak -soak.long
// or -soak.seed=N to replay a run.
var (
	soakSeed     = flag.Int64("soak.seed", 0, "seed of the randomised soak (0 picks one and prints it)")
	soakUsers    = flag.Int("soak.users", 0, "users in the soak (default 40)")
	soakSites    = flag.Int("soak.sites", 0, "sites in the soak (default 8)")
	soakRequests = flag.Int("soak.requests", 0, "requests in the soak (default 500)")
	soakReplicas = flag.Int("soak.replicas", 0, "consumer replicas; 0 runs the CI pair: 1 replica, and 3 with a restart")
	soakRestart  = flag.Bool("soak.restart", false, "SIGKILL one random replica at a random moment and restart it")
	soakLong     = flag.Bool("soak.long", false, "long preset: 300 users × 20 sites, 7,500 requests, 3 replicas, restart")
)

// soakPlan is one soak run's shape.
type soakPlan struct {
	users, sites, requests, replicas int
	restart                          bool
	seed                             int64
}

func soakPlans() map[string]soakPlan {
	base := soakPlan{users: 40, sites: 8, requests: 500}
	if *soakLong {
		base = soakPlan{users: 300, sites: 20, requests: 7500, replicas: 3, restart: true}
	}
	if *soakUsers > 0 {
		base.users = *soakUsers
	}
	if *soakSites > 0 {
		base.sites = *soakSites
	}
	if *soakRequests > 0 {
		base.requests = *soakRequests
	}
	if *soakReplicas > 0 {
		base.replicas = *soakReplicas
	}
	base.restart = base.restart || *soakRestart
	if base.replicas > 0 {
		return map[string]soakPlan{"custom": base}
	}
	one, three := base, base
	one.replicas = 1
	three.replicas, three.restart = 3, true
	return map[string]soakPlan{"1 replica": one, "3 replicas with a restart": three}
}

// TestSoak publishes random follow/unfollow requests (with duplicates) as
// fast as JetStream takes them to 1 or 3 replicas while Graph throttles,
// fails and dawdles at random, optionally kills a replica and restarts it,
// then heals Graph and checks the invariant for every pair.
func TestSoak(t *testing.T) {
	t.Parallel()
	for name, plan := range soakPlans() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			plan.seed = *soakSeed
			if plan.seed == 0 {
				plan.seed = time.Now().UnixNano() % 1_000_000_007
			}
			t.Logf("seed %d (replay with -soak.seed=%d)", plan.seed, plan.seed)
			t.Logf("plan: %d users × %d sites, %d requests, %d replicas, restart %v", plan.users, plan.sites,
				plan.requests, plan.replicas, plan.restart)
			runSoak(t, plan)
		})
	}
}

func runSoak(t *testing.T, plan soakPlan) {
	rng := rand.New(rand.NewPCG(uint64(plan.seed), uint64(plan.seed)^0x5eed))
	n := testkit.StartNATS(t, testkit.NATSOptions{})
	w := newWorld(t, n.URL(), plan.sites, nil)
	replicas := w.startPulling("replica", plan.replicas)

	reqs, repeats, doubled := randomRequests(rng, plan.requests, plan.users, plan.sites)
	t.Logf("published: %d requests (%d repeated bodies, %d with a site twice)", len(reqs), repeats, doubled)

	w.sim.SetChaos(soakChaos(plan.seed))
	killAt := uint64(0)
	if plan.restart {
		// Kill once this many requests are left, somewhere in the middle.
		killAt = uint64(plan.requests) * uint64(30+rng.IntN(50)) / 100
	}
	victim := rng.IntN(plan.replicas)
	w.publishAll(reqs)

	// Chaos for the first part of the run: until half the requests settled
	// (or a generous while), then healthy so that everything can settle.
	chaosUntil := time.Now().Add(2 * time.Minute)
	killed := false
	for {
		left := w.pending()
		if plan.restart && !killed && left <= killAt {
			t.Logf("SIGKILL %s with %d requests left", replicas[victim].Name(), left)
			replicas[victim].Kill()
			if err := replicas[victim].Wait(time.Minute); err == nil {
				t.Errorf("exit after SIGKILL: got status 0")
			}
			// Not waited for: the killed replica's pull request still counts
			// as waiting until it expires.
			replicas[victim] = w.start("replica-restarted")
			killed = true
		}
		if (left <= uint64(plan.requests)/2 || time.Now().After(chaosUntil)) && (killed || !plan.restart || left == 0) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.sim.SetChaos(graphsim.Chaos{})
	if plan.restart && !killed {
		t.Logf("every request settled before the kill point; replica %d killed and restarted afterwards", victim)
	}
	w.verify()
}

// randomRequests draws n requests: a random user, follow or unfollow, 1–3
// random sites; one in ten repeats an earlier request's body, one in ten
// names a site twice.
func randomRequests(rng *rand.Rand, n, users, sites int) (reqs []testkit.Sent, repeats, doubled int) {
	reqs = make([]testkit.Sent, 0, n)
	for len(reqs) < n {
		if len(reqs) > 0 && rng.IntN(10) == 0 {
			// The same body again, as a producer retrying would send it.
			r := reqs[rng.IntN(len(reqs))]
			r.Sites = slices.Clone(r.Sites)
			reqs = append(reqs, r)
			repeats++
			continue
		}
		action := event.Follow
		if rng.IntN(2) == 0 {
			action = event.Unfollow
		}
		var ids []string
		for range 1 + rng.IntN(3) {
			ids = append(ids, testkit.Site(rng.IntN(sites)))
		}
		if rng.IntN(10) == 0 {
			ids = append(ids, ids[0])
			doubled++
		}
		reqs = append(reqs, testkit.Sent{User: testkit.User(rng.IntN(users)), Action: action, Sites: ids})
	}
	return reqs, repeats, doubled
}

// soakChaos is the fault mix of the randomised tests.
func soakChaos(seed int64) graphsim.Chaos {
	return graphsim.Chaos{Seed: seed, Throttle: 0.03, RetryAfter: "1", Unavailable: 0.05,
		SiteTransient: 0.1, LatencyJitter: 30 * time.Millisecond}
}
