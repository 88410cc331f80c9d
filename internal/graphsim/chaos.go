package graphsim

import (
	"math/rand/v2"
	"slices"
	"time"
)

// Chaos makes every Graph call fail at random, reproducibly: one source
// seeded with Seed decides each call's faults when it arrives, so a seed
// replays the same faults given the same order of calls. Probabilities are
// in [0, 1]; the zero value turns chaos off.
type Chaos struct {
	Seed int64
	// Throttle is the probability of a 429 carrying Retry-After RetryAfter.
	Throttle float64
	// RetryAfter is the Retry-After of a chaos 429, verbatim ("1", "0.5");
	// empty means "1".
	RetryAfter string
	// Unavailable is the probability of a 503 without Retry-After.
	Unavailable float64
	// SiteTransient is the probability that each site of an admitted call
	// gets a 207 serviceNotAvailable entry instead of being applied; its
	// state is left unchanged.
	SiteTransient float64
	// LatencyJitter adds latency uniform in [0, LatencyJitter) to each call.
	LatencyJitter time.Duration
}

// active reports whether c injects anything.
func (c Chaos) active() bool {
	return c.Throttle > 0 || c.Unavailable > 0 || c.SiteTransient > 0 || c.LatencyJitter > 0
}

// chaosVerdict is what chaos decided for one call at its arrival.
type chaosVerdict struct {
	jitter      time.Duration
	throttle    bool
	retryAfter  string
	unavailable bool
	// sites decides each site of the call; nil when SiteTransient is 0.
	sites         *rand.Rand
	siteTransient float64
}

// siteFails draws whether the next site of the call fails transiently.
func (v *chaosVerdict) siteFails() bool {
	return v != nil && v.sites != nil && v.sites.Float64() < v.siteTransient
}

// SetChaos replaces the chaos settings and reseeds the source with c.Seed;
// SetChaos(Chaos{}) turns chaos off. An outage is SetChaos(Chaos{Unavailable:
// 1}) followed later by SetChaos(Chaos{}). Counted faults (Throttle,
// Unavailable, FailSite, OmitSite) still come first.
func (s *Server) SetChaos(c Chaos) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chaos = c
	s.chaosRand = nil
	if c.active() {
		seed := uint64(c.Seed)
		s.chaosRand = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	}
}

// chaosLocked draws one call's faults. Every call draws the same number of
// values from the source (four), whatever is configured, so that the
// sequence depends only on the order of calls.
func (s *Server) chaosLocked() *chaosVerdict {
	if s.chaosRand == nil {
		return nil
	}
	c, r := s.chaos, s.chaosRand
	jitter, throttle, unavailable, siteSeed := r.Float64(), r.Float64(), r.Float64(), r.Uint64()
	v := &chaosVerdict{
		throttle:      throttle < c.Throttle,
		retryAfter:    c.RetryAfter,
		unavailable:   unavailable < c.Unavailable,
		siteTransient: c.SiteTransient,
	}
	if v.retryAfter == "" {
		v.retryAfter = "1"
	}
	if c.LatencyJitter > 0 {
		v.jitter = time.Duration(jitter * float64(c.LatencyJitter))
	}
	if c.SiteTransient > 0 {
		v.sites = rand.New(rand.NewPCG(siteSeed, siteSeed^0x9e3779b97f4a7c15))
	}
	return v
}

// admitChaos returns the chaos reply for v, if any; nil admits the call.
func admitChaos(v *chaosVerdict, now time.Time) *reply {
	switch {
	case v == nil:
		return nil
	case v.throttle:
		wait, until := parseRetryAfter(v.retryAfter, now)
		return &reply{err: throttledError(), retryAfter: v.retryAfter, wait: wait, until: until, announce: true, throttled: true}
	case v.unavailable:
		return &reply{err: unavailableError(503)}
	}
	return nil
}

// Effect is one change or re-assertion of a (user, site) pair's state: every
// site an add or remove call applied. User and Site are canonical lower case.
type Effect struct {
	At   time.Time
	User string
	Site string
	Op   string // "follow" or "unfollow"
}

// The Effect.Op values.
const (
	EffectFollow   = "follow"
	EffectUnfollow = "unfollow"
)

// Effects returns a copy of every effect so far, in the order applied.
// Reset does not forget them: they are the history of the followed state.
func (s *Server) Effects() []Effect {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.effects)
}

func (s *Server) effectLocked(user, key, op string) {
	s.effects = append(s.effects, Effect{At: time.Now(), User: user, Site: key, Op: op})
}
