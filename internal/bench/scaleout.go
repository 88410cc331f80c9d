package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

const (
	// maxReplicas is the most consumer processes scaleout runs side by
	// side (1, 2, … up to it); with two modes the scenario makes twice as
	// many parts, each bounded by the timeout.
	maxReplicas = 3
	// scaleoutBurst is the budget's token bucket in the scaleout scenario:
	// a second's worth of R, so the burst of first batches when N replicas
	// start at once costs the figure little and the sustained share of the
	// one app's limit is what is measured.
	scaleoutBurst = throttleRate
)

// scaleoutMode is one Graph the replicas are measured against.
type scaleoutMode struct {
	name string // as printed: "no budget", "budget"
	slug string // in part names
	sim  graphsim.Options
}

// scaleoutModes are the two Graphs of the issue: one answering every call
// after simLatency, and the same with the app's budget, which every replica
// draws on because SharePoint throttles per app, not per process.
func scaleoutModes() []scaleoutMode {
	return []scaleoutMode{
		{name: "no budget", slug: "free", sim: graphsim.Options{Sites: sitePool(), Latency: simLatency}},
		{name: fmt.Sprintf("budget %d/s", throttleRate), slug: "budget",
			sim: graphsim.Options{Sites: sitePool(), Latency: simLatency, RateLimit: throttleRate, Burst: scaleoutBurst}},
	}
}

// scaled is what one scaleout part measured.
type scaled struct {
	drained
	replicas int
	// mems are each replica's figures, in start order.
	mems []memory
	// ackedP50 and ackedP99 are how long after the replicas started half
	// and 99% of the backlog was acknowledged: publish→ack means nothing
	// for a backlog published beforehand, so these stand in for latency.
	ackedP50, ackedP99 time.Duration
}

// scaleout drains the same pre-published backlog with 1, 2 … up to
// scaleoutReplicas consumer processes sharing the durable consumer, first against a Graph
// without a budget, then against one with the app's budget, and compares
// each with one replica measured in the same run. It has no targets: it
// measures what adding replicas buys. Each part is bounded by the scenario
// timeout; a part that runs out of time is reported with what it drained.
func (r *runner) scaleout(ctx context.Context) error {
	for _, m := range scaleoutModes() {
		var one float64
		for n := 1; n <= min(r.size.scaleoutReplicas, maxReplicas); n++ {
			part := fmt.Sprintf("scaleout-%s-%d", m.slug, n)
			pctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
			s, err := r.drainReplicas(pctx, part, m.sim, n)
			cancel()
			if err != nil {
				return err
			}
			if n == 1 {
				one = s.rate
			}
			r.addScaled(m, s, one)
		}
	}
	return nil
}

// drainReplicas publishes the scaleout backlog, starts replicas consumers
// and waits for them to empty the stream or ctx to end.
func (r *runner) drainReplicas(ctx context.Context, part string, sim graphsim.Options, replicas int) (scaled, error) {
	n, users := r.size.scaleoutEvents, r.size.scaleoutUsers
	s := scaled{drained: drained{n: n}, replicas: replicas}
	// A part that runs out of time stops with throttled work in hand; a
	// short shutdown keeps that from adding the default 25 s.
	g, err := r.newRig(part, sim, map[string]string{"SITEFOLLOW_SHUTDOWN_TIMEOUT": r.size.shutdownTimeout.String()})
	if err != nil {
		return s, err
	}
	defer g.close()
	if _, err := g.provision(ctx); err != nil {
		return s, err
	}
	if err := r.publishBacklog(ctx, g, n, users); err != nil {
		return s, err
	}
	set, err := g.startReplicas(replicas)
	if err != nil {
		return s, err
	}
	start := time.Now()
	empty, err := g.waitEmpty(ctx)
	switch {
	case err == nil:
		s.finished = true
		s.wall = empty.Sub(start)
	case ctx.Err() != nil && !errors.Is(err, errConsumerExited):
		s.wall = time.Since(start)
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		s.left, err = g.streamMsgs(qctx)
		cancel()
		if err != nil {
			r.note("%s: %v", part, err)
		}
		r.note("%s: not drained within the part's timeout; %d requests left", part, s.left)
	default:
		return s, err
	}
	s.counts = g.waitAcks(ctx, n)
	if s.finished {
		r.checkAcks(g, n, s.counts)
	}
	s.mem, err = g.stopConsumer()
	if err != nil {
		r.note("%v", err)
	}
	s.mems = set.memories()
	s.calls = g.sim.Calls()
	s.rate = rate(s.counts.Distinct, s.counts.First, s.counts.Last)
	s.ackedP50, s.ackedP99 = ackedBy(g, start)
	r.logf("%s: %d replicas drained %d in %s; %.0f events/s first ack to last; %d Graph calls",
		part, replicas, s.counts.Distinct, s.wall.Round(time.Millisecond), s.rate, len(s.calls))
	return s, nil
}

// ackedBy returns how long after start half and 99% of the published
// requests were acknowledged (nearest rank over the whole backlog); 0 for a
// share that was never reached.
func ackedBy(g *rig, start time.Time) (p50, p99 time.Duration) {
	var after []time.Duration
	published := 0
	g.pubs.each(func(seq uint64, _ time.Time) {
		published++
		if at, ok := g.acks.ackedAt(seq); ok {
			after = append(after, at.Sub(start))
		}
	})
	sorted := sortedDurations(after)
	at := func(p float64) time.Duration {
		rank := max(int(math.Ceil(p/100*float64(published))), 1)
		if rank > len(sorted) {
			return 0
		}
		return sorted[rank-1]
	}
	return at(50), at(99)
}

// scaleoutCalls summarises a part's Graph calls.
type scaleoutCalls struct {
	calls, sites, largest int
	throttled             int // answered 429
	applied               int // sites named in calls answered 200 or 204
	// overlaps counts calls that arrived while another call for the same
	// user was unanswered: one replica never does that (one batch per
	// user in flight), replicas sharing a user without coordination can.
	overlaps int
}

func summariseCalls(calls []graphsim.Call) scaleoutCalls {
	var s scaleoutCalls
	byUser := make(map[string][]graphsim.Call)
	for _, c := range calls {
		s.calls++
		s.sites += len(c.SiteIDs)
		s.largest = max(s.largest, len(c.SiteIDs))
		switch c.Status {
		case http.StatusTooManyRequests:
			s.throttled++
		case http.StatusOK, http.StatusNoContent:
			s.applied += len(c.SiteIDs)
		}
		u := strings.ToLower(c.UserID)
		byUser[u] = append(byUser[u], c)
	}
	for _, cs := range byUser {
		slices.SortFunc(cs, func(a, b graphsim.Call) int { return a.At.Compare(b.At) })
		var busyUntil time.Time
		for _, c := range cs {
			if c.At.Before(busyUntil) {
				s.overlaps++
			}
			// A call never answered (stopped mid-flight) keeps the user
			// busy to the end of the part.
			end := c.Answered
			if end.IsZero() {
				end = c.At.Add(24 * time.Hour)
			}
			if end.After(busyUntil) {
				busyUntil = end
			}
		}
	}
	return s
}

// addScaled records a part's rows; one is the 1-replica rate of the same
// mode in this run.
func (r *runner) addScaled(m scaleoutMode, s scaled, one float64) {
	cs := summariseCalls(s.calls)
	perCall, share := 0.0, 0.0
	if cs.calls > 0 {
		perCall = float64(cs.sites) / float64(cs.calls)
		share = float64(cs.throttled) / float64(cs.calls)
	}
	ratio := 0.0
	if one > 0 {
		ratio = s.rate / one
	}
	where := fmt.Sprintf("%d replica", s.replicas)
	if s.replicas > 1 {
		where += "s"
	}
	where += ", " + m.name
	finished := 0.0
	if s.finished {
		finished = 1
	}
	var maxHWM, sumHWM int64
	for _, mem := range s.mems {
		maxHWM = max(maxHWM, mem.HWM)
		sumHWM += mem.HWM
	}
	common := func(more map[string]float64) map[string]float64 {
		d := map[string]float64{"replicas": float64(s.replicas), "rateLimit": m.sim.RateLimit, "burst": float64(m.sim.Burst),
			"latencySeconds": m.sim.Latency.Seconds(), "events": float64(s.n), "users": float64(r.size.scaleoutUsers)}
		for k, v := range more {
			d[k] = v
		}
		return d
	}

	reached := func(d time.Duration) string {
		if d == 0 {
			return "never"
		}
		return d.Round(100 * time.Millisecond).String()
	}
	drain := fmt.Sprintf("drained in %s", s.wall.Round(100*time.Millisecond))
	if !s.finished {
		drain = fmt.Sprintf("not drained, %d left after %s", s.left, s.wall.Round(time.Second))
	}
	r.add(Row{Scenario: "scaleout", Metric: "events/s, " + where + " (ratio to 1 replica)", Value: s.rate,
		Text: fmt.Sprintf("%.0f (%.2f×), %s, half acked by %s, 99%% by %s", s.rate, ratio, drain,
			reached(s.ackedP50), reached(s.ackedP99)),
		Detail: common(map[string]float64{"eventsPerSecond": s.rate, "oneReplicaEventsPerSecond": one, "ratioToOneReplica": ratio,
			"drainSeconds": s.wall.Seconds(), "finished": finished, "left": float64(s.left), "acked": float64(s.counts.Distinct),
			"naks": float64(s.counts.Naks), "ackedP50Seconds": s.ackedP50.Seconds(), "ackedP99Seconds": s.ackedP99.Seconds()})})
	r.add(Row{Scenario: "scaleout", Metric: "Graph calls, " + where, Value: float64(cs.calls),
		Text: fmt.Sprintf("%d (%.1f sites/call, max %d; 429 %.1f%%; %d same-user overlaps)",
			cs.calls, perCall, cs.largest, 100*share, cs.overlaps),
		Detail: common(map[string]float64{"calls": float64(cs.calls), "sites": float64(cs.sites), "sitesPerCall": perCall,
			"throttled": float64(cs.throttled), "throttledShare": share, "sitesApplied": float64(cs.applied),
			"sameUserOverlaps": float64(cs.overlaps)})})
	r.add(Row{Scenario: "scaleout", Metric: "peak RSS per replica, " + where, Value: float64(maxHWM),
		Text:   fmt.Sprintf("%s (largest of %d; %s together)", megabytes(maxHWM), len(s.mems), megabytes(sumHWM)),
		Detail: common(map[string]float64{"maxVmHWMBytes": float64(maxHWM), "sumVmHWMBytes": float64(sumHWM)})})
}
