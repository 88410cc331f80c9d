package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphclient"
	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// Scenario constants shared by the targets.
const (
	// simLatency is the simulator's answer time where a scenario has one.
	simLatency = 50 * time.Millisecond
	// throttleRate is R, the requests per second the throttled simulator
	// grants the app, about what SharePoint grants one app in a large tenant.
	throttleRate = 50
	// throttleBurst is the simulator's token bucket size: small, so the
	// consumer cannot bank a long quiet spell into a burst; Graph's own
	// buckets are not documented, and 5 (0.1 s at R) is a cautious guess.
	throttleBurst = 5
	// memoryLimit is the backlog scenario's bound on peak RSS.
	memoryLimit = 100e6
)

// drained is what a pipeline run over a pre-published backlog measured.
type drained struct {
	n      int
	counts ackCounts
	// rate is events/s from the first ack to the last.
	rate float64
	// wall is from starting the consumer to seeing the stream empty.
	wall  time.Duration
	calls []graphsim.Call
	mem   memory
	// finished is false when ctx ended first; left is what remained.
	finished bool
	left     uint64
}

// pipeline publishes n round-robin requests over users, then starts the
// consumer and waits for it to empty the stream. With allowUnfinished, ctx
// ending before that is a result (finished false) rather than an error.
func (r *runner) pipeline(ctx context.Context, part string, sim graphsim.Options, n, users int, allowUnfinished bool) (drained, error) {
	return r.pipelineIn(ctx, part, sim, n, users, allowUnfinished, nil)
}

// pipelineIn is pipeline with the consumer run by serve in this process
// when serve is not nil.
func (r *runner) pipelineIn(ctx context.Context, part string, sim graphsim.Options, n, users int, allowUnfinished bool, serve ServeFunc) (drained, error) {
	d := drained{n: n}
	g, _, err := r.backlogRig(ctx, part, sim, n, users, serve)
	if err != nil {
		return d, err
	}
	defer g.close()
	if err := g.startConsumer(); err != nil {
		return d, err
	}
	start := time.Now()
	empty, err := g.waitEmpty(ctx)
	switch {
	case err == nil:
		d.finished = true
		d.wall = empty.Sub(start)
	case allowUnfinished && ctx.Err() != nil && !errors.Is(err, errConsumerExited):
		d.wall = time.Since(start)
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		d.left, err = g.streamMsgs(qctx)
		cancel()
		if err != nil {
			r.note("%s: %v", part, err)
		}
	default:
		return d, err
	}
	d.counts = g.waitAcks(ctx, n)
	if d.finished {
		r.checkAcks(g, n, d.counts)
	}
	d.mem, err = g.stopConsumer()
	if err != nil {
		r.note("%v", err)
	}
	d.calls = g.sim.Calls()
	d.rate = rate(d.counts.Distinct, d.counts.First, d.counts.Last)
	r.logf("%s: drained %d in %s; %.0f events/s first ack to last; %d Graph calls; peak RSS %s",
		part, d.counts.Distinct, d.wall.Round(time.Millisecond), d.rate, len(d.calls), megabytes(d.mem.HWM))
	return d, nil
}

// backlogRig is a provisioned rig holding a backlog of n round-robin
// requests over users, its consumer not yet started; serve, when not nil,
// runs that consumer in this process. On error nothing is left running.
func (r *runner) backlogRig(ctx context.Context, name string, sim graphsim.Options, n, users int, serve ServeFunc) (*rig, jetstream.Consumer, error) {
	g, err := r.newRigIn(name, sim, nil, serve)
	if err != nil {
		return nil, nil, err
	}
	cons, err := g.provision(ctx)
	if err == nil {
		err = r.publishBacklog(ctx, g, n, users)
	}
	if err != nil {
		g.close()
		return nil, nil, err
	}
	return g, cons, nil
}

// publishBacklog publishes n round-robin requests over users before the
// consumer starts.
func (r *runner) publishBacklog(ctx context.Context, g *rig, n, users int) error {
	r.logf("%s: publishing %d requests over %d users", g.name, n, users)
	start := time.Now()
	if err := publishAll(ctx, g.js, g.pubs, n, roundRobin(sitePool(), users)); err != nil {
		return fmt.Errorf("%s: %w", g.name, err)
	}
	elapsed := time.Since(start)
	r.logf("%s: published in %s (%.0f/s)", g.name, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
	return nil
}

// ceiling measures a plain pull consumer that only acknowledges, in this
// process, over the same stream, consumer settings, message size and count
// as throughput: the most this machine and server allow. When throughput
// runs too, it measures the ceiling itself, round by round (see there).
func (r *runner) ceiling(ctx context.Context) error {
	if r.paired {
		r.logf("ceiling: measured in rounds alternating with throughput")
		return nil
	}
	var rates []float64
	for range r.size.throughputRounds {
		c, err := r.ceilingOnce(ctx)
		if err != nil {
			return err
		}
		rates = append(rates, c)
	}
	r.addCeiling(rates)
	return nil
}

func (r *runner) addCeiling(rates []float64) {
	r.ceilingRate = median(rates)
	r.add(Row{Scenario: "ceiling", Metric: "events/s", Value: r.ceilingRate,
		Text:   fmt.Sprintf("%.0f (median of %d)", r.ceilingRate, len(rates)),
		Detail: map[string]float64{"events": float64(r.size.throughputEvents), "rounds": float64(len(rates))}})
}

func (r *runner) ceilingOnce(ctx context.Context) (float64, error) {
	n := r.size.throughputEvents
	g, cons, err := r.backlogRig(ctx, "ceiling", graphsim.Options{Sites: sitePool()}, n, r.size.throughputUsers, nil)
	if err != nil {
		return 0, err
	}
	defer g.close()
	var handled, ackErrs atomic.Int64
	all := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if err := m.Ack(); err != nil {
			ackErrs.Add(1)
		}
		if handled.Add(1) == int64(n) {
			close(all)
		}
	}, jetstream.PullMaxMessages(10_000))
	if err != nil {
		return 0, fmt.Errorf("ceiling: consume: %w", err)
	}
	defer cc.Stop()
	select {
	case <-all:
	case <-ctx.Done():
		return 0, fmt.Errorf("ceiling: %d of %d handled: %w", handled.Load(), n, ctx.Err())
	}
	if _, err := g.waitEmpty(ctx); err != nil {
		return 0, err
	}
	if k := ackErrs.Load(); k > 0 {
		return 0, fmt.Errorf("ceiling: %d acks failed", k)
	}
	counts := g.waitAcks(ctx, n)
	r.checkAcks(g, n, counts)
	c := rate(counts.Distinct, counts.First, counts.Last)
	r.logf("ceiling: %.0f events/s", c)
	return c, nil
}

// throughput measures the real pipeline on a backlog with the simulator
// answering at once.
//
// The figure compared with the ceiling runs the consumer's serve code inside
// this process, as the ceiling's consumer is: on a 2-core machine two Go
// processes that each schedule on both cores contend in ways a deployment,
// with NATS on other machines, never sees, and that would measure the
// process layout rather than the consumer. The consumer as its own process
// is measured too and reported beside it, with its memory.
//
// Paired with ceiling, it alternates the two, round by round, and reports
// the median of the per-round ratios: a shared machine's load drifts, and
// adjacent runs see the same drift.
func (r *runner) throughput(ctx context.Context) error {
	var ceilings, rates, ratios, walls []float64
	for range r.size.throughputRounds {
		if r.paired {
			c, err := r.ceilingOnce(ctx)
			if err != nil {
				return err
			}
			ceilings = append(ceilings, c)
		}
		d, err := r.pipelineIn(ctx, "throughput", graphsim.Options{Sites: sitePool()}, r.size.throughputEvents, r.size.throughputUsers, false, r.opts.Serve)
		if err != nil {
			return err
		}
		rates, walls = append(rates, d.rate), append(walls, d.wall.Seconds())
		if r.paired && ceilings[len(ceilings)-1] > 0 {
			ratios = append(ratios, d.rate/ceilings[len(ceilings)-1])
		}
	}
	if r.paired {
		r.addCeiling(ceilings)
	}
	where := "in process"
	if r.opts.Serve == nil {
		where = "child process"
	}
	perSecond := median(rates)
	row := Row{Scenario: "throughput", Metric: "events/s " + where + " (ratio to ceiling)",
		Detail: map[string]float64{"events": float64(r.size.throughputEvents), "eventsPerSecond": perSecond, "ceilingEventsPerSecond": r.ceilingRate,
			"wallSeconds": median(walls), "rounds": float64(len(rates))}}
	for i, x := range ratios {
		row.Detail[fmt.Sprintf("ratioRound%d", i+1)] = x
	}
	switch {
	case len(ratios) > 0:
		ratio := median(ratios)
		row.Value, row.Text, row.Target, row.Pass = ratio, fmt.Sprintf("%.0f (%.2f, median of %d rounds)", perSecond, ratio, len(ratios)), "≥ 0.50", pass(ratio >= 0.5)
	case r.ceilingRate > 0:
		ratio := perSecond / r.ceilingRate
		row.Value, row.Text, row.Target, row.Pass = ratio, fmt.Sprintf("%.0f (%.2f)", perSecond, ratio), "≥ 0.50", pass(ratio >= 0.5)
	default:
		row.Value, row.Text, row.Target = perSecond, fmt.Sprintf("%.0f", perSecond), "≥ 0.50 × ceiling (ceiling not run)"
	}
	r.add(row)

	// The same backlog with the consumer as its own process, as deployed.
	d, err := r.pipeline(ctx, "throughput-process", graphsim.Options{Sites: sitePool()}, r.size.throughputEvents, r.size.throughputUsers, false)
	if err != nil {
		return err
	}
	proc := Row{Scenario: "throughput", Metric: "events/s child process", Value: d.rate,
		Detail: map[string]float64{"eventsPerSecond": d.rate, "wallSeconds": d.wall.Seconds()}}
	proc.Text = fmt.Sprintf("%.0f", d.rate)
	if r.ceilingRate > 0 {
		proc.Text = fmt.Sprintf("%.0f (%.2f of the in-process ceiling)", d.rate, d.rate/r.ceilingRate)
	}
	r.add(proc)
	r.add(callsRow("throughput", d.calls))
	r.add(memoryRow("throughput", "peak RSS", d.mem, false))
	return nil
}

// aggregationRequests gives each of users k ∈ [1,60] distinct follow sites
// and a quarter of them also j ∈ [1,20] distinct unfollow sites, split
// into events of 1..5 sites, shuffled together. It is deterministic (seed 1).
func aggregationRequests(users int, pool []string) []event.Request {
	rng := rand.New(rand.NewPCG(1, 1))
	var reqs []event.Request
	chunk := func(user string, action event.Action, sites []string) {
		for len(sites) > 0 {
			k := min(1+rng.IntN(5), len(sites))
			reqs = append(reqs, event.Request{UserID: user, Action: action, SiteIDs: sites[:k:k], Source: "bench"})
			sites = sites[k:]
		}
	}
	for u := range users {
		perm := rng.Perm(len(pool))
		k := 1 + rng.IntN(60)
		sites := make([]string, 0, 80)
		for _, i := range perm[:80] {
			sites = append(sites, pool[i])
		}
		chunk(userName(u), event.Follow, sites[:k])
		if rng.IntN(4) == 0 {
			j := 1 + rng.IntN(20)
			chunk(userName(u), event.Unfollow, sites[k:k+j])
		}
	}
	rng.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
	return reqs
}

// runningRig is a rig whose consumer is running and pulling, for the
// scenarios that publish to a live consumer. On error nothing is left
// running.
func (r *runner) runningRig(ctx context.Context, name string, sim graphsim.Options) (*rig, error) {
	g, err := r.newRig(name, sim, nil)
	if err != nil {
		return nil, err
	}
	if _, err := g.provision(ctx); err == nil {
		err = g.startConsumer()
	}
	if err == nil {
		err = g.waitPulling(ctx)
	}
	if err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

// aggregation publishes bursts, well within the linger time, to a running
// consumer and compares its Graph calls with the fewest possible.
func (r *runner) aggregation(ctx context.Context) error {
	g, err := r.runningRig(ctx, "aggregation", graphsim.Options{Sites: sitePool()})
	if err != nil {
		return err
	}
	defer g.close()
	reqs := aggregationRequests(r.size.aggregationUsers, sitePool())
	bodies := make([][]byte, len(reqs))
	for i, q := range reqs {
		if bodies[i], err = encode(q); err != nil {
			return err
		}
	}
	r.logf("aggregation: publishing %d events for %d users", len(reqs), r.size.aggregationUsers)
	start := time.Now()
	p := newPublisher(ctx, g.js, g.pubs)
	for _, b := range bodies {
		if err := p.send(ctx, b); err != nil {
			p.abort()
			return fmt.Errorf("aggregation: %w", err)
		}
	}
	if err := p.finish(); err != nil {
		return fmt.Errorf("aggregation: %w", err)
	}
	published := time.Since(start)
	if published > g.cfg.BatchLinger/2 {
		r.note("aggregation: publishing took %s, more than half the linger (%s); bursts may straddle batches",
			published.Round(time.Millisecond), g.cfg.BatchLinger)
	}
	if _, err := g.waitEmpty(ctx); err != nil {
		return err
	}
	counts := g.waitAcks(ctx, len(reqs))
	r.checkAcks(g, len(reqs), counts)
	if _, err := g.stopConsumer(); err != nil {
		r.note("%v", err)
	}
	calls := g.sim.Calls()
	ideal := idealCalls(reqs, g.cfg.BatchMaxSites)
	ratio := float64(len(calls)) / float64(ideal)
	r.add(Row{Scenario: "aggregation", Metric: "Graph requests vs ideal", Value: ratio,
		Text:   fmt.Sprintf("%d / %d (%.2f)", len(calls), ideal, ratio),
		Target: "≤ 1.10", Pass: pass(ratio <= 1.1),
		Detail: map[string]float64{"calls": float64(len(calls)), "ideal": float64(ideal), "events": float64(len(reqs)),
			"publishSeconds": published.Seconds()}})
	r.add(callsRow("aggregation", calls))
	return nil
}

// throttled runs a large backlog against a simulator granting R requests
// per second and measures, over a steady window, how close the consumer
// runs to R × batch size without bouncing off the limit.
func (r *runner) throttled(ctx context.Context) error {
	g, err := r.newRig("throttled",
		graphsim.Options{Sites: sitePool(), RateLimit: throttleRate, Burst: throttleBurst, Latency: simLatency},
		map[string]string{"SITEFOLLOW_SHUTDOWN_TIMEOUT": r.size.shutdownTimeout.String()})
	if err != nil {
		return err
	}
	defer g.close()
	if _, err := g.provision(ctx); err != nil {
		return err
	}
	n := r.size.throttledUsers * r.size.throttledPerUser
	if err := r.publishBacklog(ctx, g, n, r.size.throttledUsers); err != nil {
		return err
	}
	if err := g.startConsumer(); err != nil {
		return err
	}
	t0, err := g.firstCall(ctx)
	if err != nil {
		return err
	}
	from := t0.Add(r.size.throttledSkip)
	to := from.Add(r.size.throttledWindow)
	r.logf("throttled: first Graph call; measuring %s after skipping %s", r.size.throttledWindow, r.size.throttledSkip)
	select {
	case <-time.After(time.Until(to)):
	case <-ctx.Done():
		return fmt.Errorf("throttled: %w", ctx.Err())
	case <-g.proc.done():
		return fmt.Errorf("throttled: %w", g.proc.exitError())
	}
	left, err := g.streamMsgs(ctx)
	if err != nil {
		return err
	}
	if left == 0 {
		r.note("throttled: the backlog ran out before the window ended; the rate is understated")
	}
	if _, err := g.stopConsumer(); err != nil {
		r.note("%v", err)
	}
	early := g.sim.EarlyCalls()
	calls := g.sim.Calls()
	strict := earlyAfterAnswer(calls, earlyMargin)
	w := throttleWindow(calls, from, to)
	if w.multiStatus > 0 {
		r.note("throttled: %d calls in the window were answered 207 and not counted as applied", w.multiStatus)
	}
	want := float64(throttleRate * g.cfg.BatchMaxSites)
	perSec := float64(w.appliedSites) / r.size.throttledWindow.Seconds()
	ratio := perSec / want
	r.add(Row{Scenario: "throttled", Metric: "sites applied/s (ratio to R × batch)", Value: ratio,
		Text:   fmt.Sprintf("%.0f (%.2f of %.0f)", perSec, ratio, want),
		Target: "≥ 0.90", Pass: pass(ratio >= 0.9),
		Detail: map[string]float64{"sitesPerSecond": perSec, "rTimesBatch": want, "windowSeconds": r.size.throttledWindow.Seconds(),
			"calls": float64(w.calls)}})
	share := 0.0
	if w.calls > 0 {
		share = float64(w.throttled) / float64(w.calls)
	}
	r.add(Row{Scenario: "throttled", Metric: "calls answered 429", Value: share,
		Text:   fmt.Sprintf("%.1f%% (%d of %d)", 100*share, w.throttled, w.calls),
		Target: "≤ 2%", Pass: pass(share <= 0.02),
		Detail: map[string]float64{"throttled": float64(w.throttled), "calls": float64(w.calls)}})
	// The target counts calls the consumer could have held back: sent after
	// a 429 was answered and before its Retry-After. Calls already on the
	// wire when the 429 went out are shown apart; no client can recall them.
	r.add(Row{Scenario: "throttled", Metric: "calls before Retry-After", Value: float64(strict),
		Text:   fmt.Sprintf("%d (+%d already in flight when the 429 went out)", strict, early-strict),
		Target: "= 0", Pass: pass(strict == 0),
		Detail: map[string]float64{"simulatorEarly": float64(early), "earlyAfterAnswer": float64(strict), "callsTotal": float64(len(calls))}})
	return nil
}

// firstCall waits for the simulator's first Graph call and returns when it
// arrived.
func (g *rig) firstCall(ctx context.Context) (time.Time, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for g.sim.CallCount() == 0 {
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s: wait for a Graph call: %w", g.name, ctx.Err())
		case <-g.proc.done():
			return time.Time{}, fmt.Errorf("%s: %w", g.name, g.proc.exitError())
		case <-tick.C:
		}
	}
	return g.sim.Calls()[0].At, nil
}

// windowStats count the Graph calls that arrived in a window.
type windowStats struct {
	calls, throttled, multiStatus, appliedSites int
	// admitted counts calls answered and not throttled: what the
	// simulator's budget let through, whatever became of them then.
	admitted int
}

// throttleWindow counts calls arriving in [from, to): sites count as applied
// only from calls answered 200 or 204, which apply every site they name. A
// call is throttled when answered 429 or refused by the simulator's budget
// with another status (503).
func throttleWindow(calls []graphsim.Call, from, to time.Time) windowStats {
	var w windowStats
	for _, c := range calls {
		if c.At.Before(from) || !c.At.Before(to) {
			continue
		}
		w.calls++
		if c.Throttled || c.Status == http.StatusTooManyRequests {
			w.throttled++
			continue
		}
		if c.Status != 0 {
			w.admitted++
		}
		switch c.Status {
		case http.StatusOK, http.StatusNoContent:
			w.appliedSites += len(c.SiteIDs)
		case http.StatusMultiStatus:
			w.multiStatus++
		}
	}
	return w
}

// latency sends a steady load to a running consumer and measures publish →
// ack for every request.
func (r *runner) latency(ctx context.Context) error {
	g, err := r.runningRig(ctx, "latency", graphsim.Options{Sites: sitePool(), Latency: simLatency})
	if err != nil {
		return err
	}
	defer g.close()
	load, err := r.steadyLoad(ctx, g)
	if err != nil {
		return err
	}
	if _, err := g.waitEmpty(ctx); err != nil {
		return err
	}
	counts := g.waitAcks(ctx, load.sent)
	r.checkAcks(g, load.sent, counts)
	if _, err := g.stopConsumer(); err != nil {
		r.note("%v", err)
	}

	var lats []time.Duration
	unacked := 0
	g.pubs.each(func(seq uint64, at time.Time) {
		if acked, ok := g.acks.ackedAt(seq); ok {
			lats = append(lats, acked.Sub(at))
		} else {
			unacked++
		}
	})
	sorted := sortedDurations(lats)
	p50, p99 := percentile(sorted, 50), percentile(sorted, 99)
	limit := g.cfg.BatchLinger + 3*simLatency + 50*time.Millisecond
	r.add(Row{Scenario: "latency", Metric: "p50 publish→ack", Value: p50.Seconds(), Text: seconds(p50),
		Detail: map[string]float64{"samples": float64(len(lats))}})
	r.add(Row{Scenario: "latency", Metric: "p99 publish→ack", Value: p99.Seconds(), Text: seconds(p99),
		Target: "≤ " + seconds(limit) + " (linger + 3×50ms + 50ms)", Pass: pass(len(lats) > 0 && p99 <= limit),
		Detail: map[string]float64{"samples": float64(len(lats)), "limitSeconds": limit.Seconds(), "maxSeconds": percentile(sorted, 100).Seconds()}})
	r.add(Row{Scenario: "latency", Metric: "load published", Value: load.rate,
		Text:   fmt.Sprintf("%.0f/s for %s (%d requests)", load.rate, load.elapsed.Round(time.Millisecond), load.sent),
		Detail: map[string]float64{"maxLagSeconds": load.maxLag.Seconds()}})
	if unacked > 0 {
		r.note("latency: %d published requests have no ack on record", unacked)
	}
	if load.rate < 0.95*r.size.latencyRate || load.maxLag > 100*time.Millisecond {
		r.note("latency: the publisher fell behind (%.0f/s of %.0f/s, up to %s late); the load was not steady",
			load.rate, r.size.latencyRate, load.maxLag.Round(time.Millisecond))
	}
	return nil
}

// steadyLoadResult is what steadyLoad achieved.
type steadyLoadResult struct {
	sent    int
	elapsed time.Duration
	rate    float64
	// maxLag is the furthest the publisher fell behind its schedule.
	maxLag time.Duration
}

// steadyLoad publishes one-site requests at the scenario's rate for its
// duration, each to a random user (seed 1) and a site that user has not had
// yet. The schedule is by elapsed time, so a slow tick is caught up at once.
func (r *runner) steadyLoad(ctx context.Context, g *rig) (steadyLoadResult, error) {
	return r.steadyLoadOf(ctx, g, "latency", r.size.latencyRate, r.size.latencyUsers, r.size.latencyDuration)
}

// steadyLoadOf is steadyLoad at rate requests per second over users for
// duration, for the scenario named part.
func (r *runner) steadyLoadOf(ctx context.Context, g *rig, part string, rate float64, users int, duration time.Duration) (steadyLoadResult, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	pool := sitePool()
	perUser := make([]int, users)
	total := int(rate * duration.Seconds())
	r.logf("%s: publishing %.0f requests/s over %d users for %s", part, rate, users, duration)
	p := newPublisher(ctx, g.js, g.pubs)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var res steadyLoadResult
	start := time.Now()
	for res.sent < total {
		due := min(int(time.Since(start).Seconds()*rate), total)
		lag := time.Duration(float64(due-res.sent) / rate * float64(time.Second))
		res.maxLag = max(res.maxLag, lag)
		for ; res.sent < due; res.sent++ {
			u := rng.IntN(len(perUser))
			req := event.Request{UserID: userName(u), Action: event.Follow, SiteIDs: []string{pool[perUser[u]%len(pool)]}, Source: "bench"}
			perUser[u]++
			data, err := encode(req)
			if err == nil {
				err = p.send(ctx, data)
			}
			if err != nil {
				p.abort()
				return res, fmt.Errorf("%s: %w", part, err)
			}
		}
		select {
		case <-ctx.Done():
			p.abort()
			return res, fmt.Errorf("%s: %w", part, ctx.Err())
		case <-g.proc.done():
			p.abort()
			return res, fmt.Errorf("%s: %w", part, g.proc.exitError())
		case <-tick.C:
		}
	}
	res.elapsed = time.Since(start)
	res.rate = float64(res.sent) / res.elapsed.Seconds()
	if err := p.finish(); err != nil {
		return res, fmt.Errorf("%s: %w", part, err)
	}
	return res, nil
}

// naive measures what a straightforward integration achieves (one message
// fetched, one Graph call, one ack, repeat) and the real pipeline on a
// backlog with the same simulator latency.
func (r *runner) naive(ctx context.Context) error {
	naiveRate, err := r.naiveRun(ctx)
	if err != nil {
		return err
	}
	r.add(Row{Scenario: "naive", Metric: "naive events/s", Value: naiveRate, Text: fmt.Sprintf("%.1f", naiveRate),
		Detail: map[string]float64{"events": float64(r.size.naiveEvents)}})
	d, err := r.pipeline(ctx, "naive-pipeline", graphsim.Options{Sites: sitePool(), Latency: simLatency},
		r.size.pipelineEvents, r.size.pipelineUsers, false)
	if err != nil {
		return err
	}
	ratio := 0.0
	if naiveRate > 0 {
		ratio = d.rate / naiveRate
	}
	r.add(Row{Scenario: "naive", Metric: "pipeline events/s (ratio to naive)", Value: ratio,
		Text:   fmt.Sprintf("%.0f (%.0f×)", d.rate, ratio),
		Target: "≥ 20×", Pass: pass(ratio >= 20),
		Detail: map[string]float64{"eventsPerSecond": d.rate, "naiveEventsPerSecond": naiveRate, "events": float64(d.n)}})
	return nil
}

// naiveRun is the straightforward integration, in this process.
func (r *runner) naiveRun(ctx context.Context) (float64, error) {
	n := r.size.naiveEvents
	g, cons, err := r.backlogRig(ctx, "naive", graphsim.Options{Sites: sitePool(), Latency: simLatency}, n, r.size.pipelineUsers, nil)
	if err != nil {
		return 0, err
	}
	defer g.close()
	cred, err := graphclient.NewCredential(graphclient.CredentialConfig{
		TenantID: g.sim.TenantID(), ClientID: g.sim.ClientID(), ClientSecret: g.sim.ClientSecret(),
		AuthorityHost: g.sim.AuthorityURL(), HTTPClient: g.sim.HTTPClient(),
	})
	if err != nil {
		return 0, fmt.Errorf("naive: %w", err)
	}
	client, err := graphclient.New(graphclient.Config{BaseURL: g.sim.GraphURL(), Credential: cred, Logger: zerolog.Nop()})
	if err != nil {
		return 0, fmt.Errorf("naive: %w", err)
	}
	r.logf("naive: one message, one Graph call, one ack, %d times", n)
	for i := range n {
		if err := naiveOne(ctx, cons, client); err != nil {
			return 0, fmt.Errorf("naive: event %d: %w", i, err)
		}
	}
	if _, err := g.waitEmpty(ctx); err != nil {
		return 0, err
	}
	counts := g.waitAcks(ctx, n)
	r.checkAcks(g, n, counts)
	return rate(counts.Distinct, counts.First, counts.Last), nil
}

// naiveOne fetches one message, applies it with one Graph call and acks it.
func naiveOne(ctx context.Context, cons jetstream.Consumer, client *graphclient.Client) error {
	m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	var req event.Request
	if err := json.Unmarshal(m.Data(), &req); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	op := graphclient.Add
	if req.Action == event.Unfollow {
		op = graphclient.Remove
	}
	for _, res := range client.Apply(ctx, req.UserID, op, req.SiteIDs) {
		if res.Outcome != graphclient.Applied {
			return fmt.Errorf("apply %s: %s: %v", res.SiteID, res.Outcome, res.Err)
		}
	}
	if err := m.Ack(); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}

// backlog measures the consumer's peak memory working through a small and
// a large backlog, and that it finishes both.
func (r *runner) backlog(ctx context.Context) error {
	sizes := []int{r.size.backlogSmall, r.size.backlogLarge}
	var peaks []int64
	for _, n := range sizes {
		part := "backlog-" + shortCount(n)
		pctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
		d, err := r.pipeline(pctx, part, graphsim.Options{Sites: sitePool()}, n, r.size.backlogUsers, true)
		cancel()
		if err != nil {
			return err
		}
		peaks = append(peaks, d.mem.HWM)
		r.add(memoryRow("backlog", "peak RSS, "+shortCount(n)+" pending", d.mem, true))
		row := Row{Scenario: "backlog", Metric: "finished " + shortCount(n), Target: "stream empty", Pass: pass(d.finished),
			Detail: map[string]float64{"wallSeconds": d.wall.Seconds(), "eventsPerSecond": d.rate, "left": float64(d.left)}}
		if d.finished {
			row.Value = 1
			row.Text = fmt.Sprintf("yes, %s (%.0f events/s)", d.wall.Round(100*time.Millisecond), d.rate)
		} else {
			row.Text = fmt.Sprintf("no, %d left after %s", d.left, d.wall.Round(time.Second))
		}
		r.add(row)
	}
	if peaks[0] <= 0 {
		return errors.New("backlog: no memory reading for the small backlog")
	}
	growth := float64(peaks[1]-peaks[0]) / float64(peaks[0])
	r.add(Row{Scenario: "backlog", Metric: "peak RSS growth " + shortCount(sizes[0]) + " → " + shortCount(sizes[1]),
		Value:  math.Abs(growth),
		Text:   fmt.Sprintf("%+.1f%%", 100*growth),
		Target: "within ±20%", Pass: pass(math.Abs(growth) <= 0.2),
		Detail: map[string]float64{"smallBytes": float64(peaks[0]), "largeBytes": float64(peaks[1])}})
	return nil
}

// callsRow summarises the Graph calls a run made.
func callsRow(scenario string, calls []graphsim.Call) Row {
	sites, largest := 0, 0
	for _, c := range calls {
		sites += len(c.SiteIDs)
		largest = max(largest, len(c.SiteIDs))
	}
	perCall := 0.0
	if len(calls) > 0 {
		perCall = float64(sites) / float64(len(calls))
	}
	return Row{Scenario: scenario, Metric: "Graph calls (sites per call)", Value: float64(len(calls)),
		Text:   fmt.Sprintf("%d (%.1f, max %d)", len(calls), perCall, largest),
		Detail: map[string]float64{"calls": float64(len(calls)), "sites": float64(sites), "sitesPerCall": perCall}}
}

// memoryRow reports a consumer's peak RSS, against the limit if judged.
func memoryRow(scenario, metric string, mem memory, judged bool) Row {
	row := Row{Scenario: scenario, Metric: metric, Value: float64(mem.HWM),
		Text:   megabytes(mem.HWM),
		Detail: map[string]float64{"vmHWMBytes": float64(mem.HWM), "sampledMaxVmRSSBytes": float64(mem.SampledMax)}}
	if judged {
		row.Target = "≤ 100 MB"
		row.Pass = pass(mem.HWM > 0 && mem.HWM <= memoryLimit)
	}
	return row
}

func megabytes(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

// shortCount renders 100000 as "100k" and 1000000 as "1M".
func shortCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1_000 && n%1_000 == 0:
		return fmt.Sprintf("%dk", n/1_000)
	default:
		return fmt.Sprintf("%d", n)
	}
}
