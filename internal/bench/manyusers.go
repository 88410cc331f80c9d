package bench

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// manyUsersSites is how many sites each user of the manyusers scenario
// follows, one request each.
const manyUsersSites = 10

// manyUsersSize is the manyusers scenario's counts: users for the instant
// Graph and for the budgeted one, and how long the budgeted part is
// measured from its first call.
type manyUsersSize struct {
	instantUsers, budgetUsers int
	budgetWindow              time.Duration
	// cpuWarmup is how long after the first call the CPU reading starts:
	// by then the consumer has taken the backlog into its held window, so
	// what is measured is the work of sending at the budget's pace.
	cpuWarmup time.Duration
}

// manyUsersSizes are kept apart from the other scenarios' sizes: the
// scenario is about how many users are interleaved, so its short form keeps
// more users than a hundredth.
func (r *runner) manyUsersSizes() manyUsersSize {
	if r.opts.Short {
		return manyUsersSize{instantUsers: 500, budgetUsers: 200, budgetWindow: 3 * time.Second, cpuWarmup: time.Second}
	}
	return manyUsersSize{instantUsers: 20_000, budgetUsers: 20_000, budgetWindow: 60 * time.Second, cpuWarmup: 10 * time.Second}
}

// manyUsers publishes a reorganisation backlog, users × 10 sites
// interleaved round-robin (a user's requests are users messages apart),
// before the consumer starts. Against an instant Graph it counts the calls
// against the fewest possible and the consumer's peak memory; against the
// app's budget (50 calls/s) it measures, from the first call, how much of
// the budget is used and how full the calls are.
func (r *runner) manyUsers(ctx context.Context) error {
	size := r.manyUsersSizes()
	if err := r.manyUsersInstant(ctx, size.instantUsers); err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	return r.manyUsersBudget(pctx, size)
}

func (r *runner) manyUsersInstant(ctx context.Context, users int) error {
	pctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	n := users * manyUsersSites
	d, err := r.pipeline(pctx, "manyusers-instant", graphsim.Options{Sites: sitePool()}, n, users, true)
	if err != nil {
		return err
	}
	batch := r.rep.Consumer.BatchMaxSites
	ideal := users * ((manyUsersSites + batch - 1) / batch)
	calls := len(d.calls)
	ratio := float64(calls) / float64(ideal)
	r.add(Row{Scenario: "manyusers", Metric: fmt.Sprintf("Graph calls vs ideal, %s users × %d sites", shortCount(users), manyUsersSites),
		Value: ratio, Text: fmt.Sprintf("%d / %d (%.2f)", calls, ideal, ratio),
		Target: "≤ 1.25", Pass: pass(d.finished && ratio <= 1.25),
		Detail: map[string]float64{"calls": float64(calls), "ideal": float64(ideal), "users": float64(users),
			"events": float64(n), "finished": boolFigure(d.finished), "wallSeconds": d.wall.Seconds()}})
	r.add(callsRow("manyusers", d.calls))
	r.add(memoryRow("manyusers", fmt.Sprintf("peak RSS, %s pending over %s users", shortCount(n), shortCount(users)), d.mem, true))
	return nil
}

// manyUsersBudget runs the backlog against the app's budget and measures
// the window from the first call: calls admitted per second against the
// budget, sites per admitted call against a full one, and the consumer's
// CPU once the backlog is in its held window.
func (r *runner) manyUsersBudget(ctx context.Context, size manyUsersSize) error {
	part := "manyusers-budget"
	users, window := size.budgetUsers, size.budgetWindow
	sim := graphsim.Options{Sites: sitePool(), RateLimit: throttleRate, Burst: scaleoutBurst}
	g, err := r.newRig(part, sim, map[string]string{"SITEFOLLOW_SHUTDOWN_TIMEOUT": r.size.shutdownTimeout.String()})
	if err != nil {
		return err
	}
	defer g.close()
	if _, err := g.provision(ctx); err != nil {
		return err
	}
	n := users * manyUsersSites
	if err := r.publishBacklog(ctx, g, n, users); err != nil {
		return err
	}
	if err := g.startConsumer(); err != nil {
		return err
	}
	pid, err := g.consumerPID()
	if err != nil {
		return err
	}
	t0, err := g.firstCall(ctx)
	if err != nil {
		return err
	}
	end := t0.Add(window)
	r.logf("%s: first Graph call; measuring %s from it", part, window)
	cpu := cpuSpan{pid: pid}
	cpu.mark(t0)
	drained := false
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for !drained && time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", part, ctx.Err())
		case <-g.proc.done():
			return fmt.Errorf("%s: %w", part, g.proc.exitError())
		case <-tick.C:
		}
		if len(cpu.at) == 1 && !time.Now().Before(t0.Add(size.cpuWarmup)) {
			cpu.mark(time.Now())
		}
		left, err := g.streamMsgs(ctx)
		if err != nil {
			return err
		}
		drained = left == 0
	}
	cpu.mark(time.Now())
	if _, err := g.stopConsumer(); err != nil {
		r.note("%v", err)
	}
	calls := g.sim.Calls()
	var admitted, throttled, sites int
	last := t0
	for _, c := range calls {
		if c.At.Before(t0) || !c.At.Before(end) {
			continue
		}
		if c.Status == http.StatusTooManyRequests {
			throttled++
			continue
		}
		admitted++
		sites += len(c.SiteIDs)
		if c.At.After(last) {
			last = c.At
		}
	}
	span := window
	if drained {
		// The backlog ran out inside the window: rate over the calls made.
		span = last.Sub(t0)
		r.note("%s: the backlog was drained %s after the first call, inside the %s window", part, span.Round(time.Millisecond), window)
	}
	perSecond := 0.0
	if span > 0 {
		perSecond = float64(admitted) / span.Seconds()
	}
	used := perSecond / throttleRate
	full := min(manyUsersSites, r.rep.Consumer.BatchMaxSites)
	perCall := 0.0
	if admitted > 0 {
		perCall = float64(sites) / float64(admitted)
	}
	fullness := perCall / float64(full)
	detail := map[string]float64{"users": float64(users), "events": float64(n), "windowSeconds": span.Seconds(),
		"admitted": float64(admitted), "throttled": float64(throttled), "sites": float64(sites), "drained": boolFigure(drained)}
	r.add(Row{Scenario: "manyusers", Metric: fmt.Sprintf("budget used, %s users, %d calls/s", shortCount(users), throttleRate),
		Value: used, Text: fmt.Sprintf("%.1f calls/s admitted (%.2f of %d) over %s from the first call", perSecond, used, throttleRate, span.Round(time.Second)),
		Target: "≥ 0.90", Pass: pass(used >= 0.9), Detail: detail})
	r.add(Row{Scenario: "manyusers", Metric: fmt.Sprintf("sites per call, %s users, %d calls/s", shortCount(users), throttleRate),
		Value: fullness, Text: fmt.Sprintf("%.1f of %d (%.2f); %d calls, %d answered 429", perCall, full, fullness, admitted, throttled),
		Target: "≥ 0.80", Pass: pass(fullness >= 0.8), Detail: detail})
	if cpu.err != nil {
		r.note("%s: consumer CPU: %v", part, cpu.err)
		return nil
	}
	if len(cpu.at) < 3 {
		r.note("%s: consumer CPU: the run ended within the %s warm-up", part, size.cpuWarmup)
		return nil
	}
	// Sending at the budget's pace is little work; a loop turning while it
	// waits for Graph would show here. Taking in the backlog (decoding
	// 200k requests) is not throttling's cost, and is shown beside it.
	share, whole := cpu.share(1, 2), cpu.share(0, 2)
	r.add(Row{Scenario: "manyusers", Metric: fmt.Sprintf("consumer CPU while throttled, %s users, %d calls/s", shortCount(users), throttleRate),
		Value: share, Text: fmt.Sprintf("%.1f%% of one core over %s from %s after the first call (%.1f%% with the backlog's intake)",
			100*share, cpu.at[2].Sub(cpu.at[1]).Round(time.Second), size.cpuWarmup, 100*whole),
		Target: "< 10%", Pass: pass(share < 0.1),
		Detail: map[string]float64{"cpuSeconds": (cpu.used[2] - cpu.used[1]).Seconds(), "spanSeconds": cpu.at[2].Sub(cpu.at[1]).Seconds(),
			"shareFromFirstCall": whole}})
	return nil
}

// cpuSpan collects readings of a process's CPU time (readCPU) at marked
// moments; the first error stops it.
type cpuSpan struct {
	pid  int
	at   []time.Time
	used []time.Duration
	err  error
}

func (c *cpuSpan) mark(at time.Time) {
	if c.err != nil {
		return
	}
	used, err := readCPU(c.pid)
	if err != nil {
		c.err = err
		return
	}
	c.at, c.used = append(c.at, at), append(c.used, used)
}

// share is the CPU used between marks i and j as a share of one core.
func (c *cpuSpan) share(i, j int) float64 {
	wall := c.at[j].Sub(c.at[i]).Seconds()
	if wall <= 0 {
		return 0
	}
	return (c.used[j] - c.used[i]).Seconds() / wall
}

// boolFigure is 1 for true, for Detail maps.
func boolFigure(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
