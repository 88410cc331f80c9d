package bench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
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
}

// manyUsersSizes are kept apart from the other scenarios' sizes: the
// scenario is about how many users are interleaved, so its short form keeps
// more users than a hundredth.
func (r *runner) manyUsersSizes() manyUsersSize {
	if r.opts.Short {
		return manyUsersSize{instantUsers: 500, budgetUsers: 200, budgetWindow: 3 * time.Second}
	}
	return manyUsersSize{instantUsers: 20_000, budgetUsers: 20_000, budgetWindow: 60 * time.Second}
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
	return r.manyUsersBudget(pctx, size.budgetUsers, size.budgetWindow)
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
// budget, and sites per admitted call against a full one.
func (r *runner) manyUsersBudget(ctx context.Context, users int, window time.Duration) error {
	part := "manyusers-budget"
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
	t0, err := g.firstCall(ctx)
	if err != nil {
		return err
	}
	end := t0.Add(window)
	r.logf("%s: first Graph call; measuring %s from it", part, window)
	cpuFrom, cpuErr := g.consumerCPU()
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
		left, err := g.streamMsgs(ctx)
		if err != nil {
			return err
		}
		drained = left == 0
	}
	cpuTo, err := g.consumerCPU()
	cpuErr = cmp.Or(cpuErr, err)
	cpuSpan := time.Since(t0)
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
	if cpuErr != nil {
		r.note("%s: consumer CPU: %v", part, cpuErr)
		return nil
	}
	// Sending at the budget's pace is little work; a loop turning while it
	// waits for Graph would show here.
	share := (cpuTo - cpuFrom).Seconds() / cpuSpan.Seconds()
	r.add(Row{Scenario: "manyusers", Metric: fmt.Sprintf("consumer CPU while throttled, %s users, %d calls/s", shortCount(users), throttleRate),
		Value: share, Text: fmt.Sprintf("%.1f%% of one core over %s", 100*share, cpuSpan.Round(time.Second)),
		Target: "< 10%", Pass: pass(share < 0.1),
		Detail: map[string]float64{"cpuSeconds": (cpuTo - cpuFrom).Seconds(), "spanSeconds": cpuSpan.Seconds()}})
	return nil
}

// consumerCPU is the CPU time the consumer process has used so far (user
// and system, from /proc/<pid>/stat); only a child process has its own.
func (g *rig) consumerCPU() (time.Duration, error) {
	c, ok := g.proc.(*child)
	if !ok {
		return 0, errors.New("the consumer runs in this process")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu: %w", err)
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is the first, utime and stime the 12th and 13th.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("read cpu: unexpected /proc stat %q", b)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("read cpu: unexpected /proc stat %q", b)
	}
	var ticks uint64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read cpu: %w", err)
		}
		ticks += n
	}
	// USER_HZ is 100 on every Linux the benchmark runs on.
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// boolFigure is 1 for true, for Detail maps.
func boolFigure(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
