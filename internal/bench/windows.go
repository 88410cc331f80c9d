package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// The windows scenario holds the consumer to per-minute budgets, as
// SharePoint counts them: fixed windows (aligned from the budget's start,
// which is when the consumer starts) and sliding ones (any trailing
// minute), 600 and 3,000 calls a minute, RateLimit headers on every answer
// once 80% of a window is used, whole-second Retry-After, throttled calls
// counted against the window. Each is run twice: with the consumer left to
// find the budget, and with it given up front (SITEFOLLOW_GRAPH_BUDGET in
// resource units, 2 a call as the simulator's headers count them). The
// four parts of each round run side by side, each with its own NATS
// server, simulator and consumer process, to keep the full form within
// about seven minutes: at these budgets a consumer that does not spin
// needs little CPU.

// windowTenths is the share of a window whose calls are compared with all
// of the window's: a consumer spreading its calls evenly sends a tenth of
// them there.
const windowTenths = 10

// windowCase is one part of the windows scenario.
type windowCase struct {
	shape     graphsim.Shape
	perMinute int  // calls a minute at full scale
	given     bool // the consumer is told the budget up front
}

// windowCases are the parts of one round.
func windowCases(given bool) []windowCase {
	var out []windowCase
	for _, shape := range []graphsim.Shape{graphsim.FixedWindow, graphsim.SlidingWindow} {
		for _, perMinute := range []int{600, 3_000} {
			out = append(out, windowCase{shape: shape, perMinute: perMinute, given: given})
		}
	}
	return out
}

// windowBudget is a case's budget at the run's window: the short form's
// window is shorter than a minute by some factor, and the calls a window
// admits and the simulator's answer time shrink by the same factor, so
// the calls per second and the answer time's share of a window are the
// full form's (600/min becomes 20 per 2 s, answered after 1.7 ms).
func (r *runner) windowBudget(c windowCase) (limit int, latency time.Duration) {
	scale := r.size.budget.window.Seconds() / time.Minute.Seconds()
	limit = max(int(math.Round(float64(c.perMinute)*scale)), 1)
	latency = time.Duration(float64(simLatency) * scale).Round(time.Microsecond)
	return limit, latency
}

// label names a case in rows, with its scaling in the short form.
func (r *runner) windowLabel(c windowCase) string {
	name := "fixed"
	if c.shape == graphsim.SlidingWindow {
		name = "sliding"
	}
	s := fmt.Sprintf("%s %d/min", name, c.perMinute)
	if w := r.size.budget.window; w != time.Minute {
		limit, latency := r.windowBudget(c)
		s += fmt.Sprintf(" scaled to %d/%s, %s answers", limit, compactDuration(w), latency)
	}
	if c.given {
		s += ", budget given"
	}
	return s
}

// compactDuration renders whole minutes and seconds as SITEFOLLOW_GRAPH_BUDGET
// writes them ("1m", "2s").
func compactDuration(d time.Duration) string {
	switch {
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

// windowsFrom is where the measured windows begin: the fixed window the
// first call arrived in, or for a sliding window the first call itself,
// from which a consumer's bursts recur a window apart.
func windowsFrom(shape graphsim.Shape, t0, epoch time.Time, w time.Duration) time.Time {
	if shape == graphsim.FixedWindow {
		return epoch.Add(max(t0.Sub(epoch), 0) / w * w)
	}
	return t0
}

// windowPart is a case's run: until the measured windows end.
func (r *runner) windowPart(c windowCase) budgetPart {
	limit, latency := r.windowBudget(c)
	w, n := r.size.budget.window, r.size.budget.windows
	slug := fmt.Sprintf("windows-%s-%d", strings.ReplaceAll(c.shape.String(), " ", "-"), c.perMinute)
	settings := map[string]string{}
	if c.given {
		slug += "-given"
		settings["SITEFOLLOW_GRAPH_BUDGET"] = fmt.Sprintf("%d/%s", 2*limit, compactDuration(w))
	}
	return budgetPart{
		name: slug,
		sim: graphsim.Options{AllowAnySite: true, Latency: latency, Budget: graphsim.Budget{
			Shape: c.shape, Limit: limit, Window: w, RetryAfter: graphsim.RetryAfterWholeSeconds}},
		settings: settings,
		events:   backlogFor(float64(n * limit)), users: r.size.budget.users,
		end: func(t0, epoch time.Time) time.Time {
			return windowsFrom(c.shape, t0, epoch, w).Add(time.Duration(n) * w)
		},
	}
}

// windows runs the cases without the budget given, then with it, the four
// of each round side by side.
func (r *runner) windows(ctx context.Context) error {
	for _, given := range []bool{false, true} {
		cases := windowCases(given)
		runs := make([]budgetRun, len(cases))
		errs := make([]error, len(cases))
		logf := r.lockedLogf()
		var wg sync.WaitGroup
		for i, c := range cases {
			wg.Go(func() {
				pctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
				defer cancel()
				runs[i], errs[i] = r.runBudgetPart(pctx, r.windowPart(c), logf)
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		for i, c := range cases {
			r.noteAll(runs[i].notes)
			r.windowRows(c, runs[i])
		}
	}
	return nil
}

// windowSpread is how one window's calls fell: firstTenth counts those that
// arrived in its first tenth.
type windowSpread struct {
	windowStats
	firstTenth int
}

// share is the part of the window's calls that came in its first tenth.
func (s windowSpread) share() float64 {
	if s.calls == 0 {
		return 0
	}
	return float64(s.firstTenth) / float64(s.calls)
}

// spreadWindows counts the calls of n windows of w from first.
func spreadWindows(calls []graphsim.Call, first time.Time, w time.Duration, n int) []windowSpread {
	out := make([]windowSpread, n)
	for i := range out {
		from := first.Add(time.Duration(i) * w)
		out[i] = windowSpread{
			windowStats: throttleWindow(calls, from, from.Add(w)),
			firstTenth:  throttleWindow(calls, from, from.Add(w/windowTenths)).calls,
		}
	}
	return out
}

// windowRows records a case's figures: the share of the windows' budget
// admitted (≥ 0.90), the share of calls throttled (≤ 1%), the first
// window's calls in its first tenth (≤ 20%, judged only when the budget
// was given: a consumer that must find the budget has nothing to spread
// its first window's calls by) and the most crowded first tenth among the
// later windows (≤ 20%).
func (r *runner) windowRows(c windowCase, run budgetRun) {
	label := r.windowLabel(c)
	limit, _ := r.windowBudget(c)
	w, n := r.size.budget.window, r.size.budget.windows
	spread := spreadWindows(run.calls, windowsFrom(c.shape, run.t0, run.epoch, w), w, n)
	var total windowStats
	admitted := make([]string, n)
	for i, s := range spread {
		total.calls += s.calls
		total.admitted += s.admitted
		total.throttled += s.throttled
		admitted[i] = fmt.Sprint(s.admitted)
	}
	budget := n * limit
	used := float64(total.admitted) / float64(budget)
	detail := map[string]float64{"limit": float64(limit), "windowSeconds": w.Seconds(), "windows": float64(n),
		"calls": float64(total.calls), "admitted": float64(total.admitted), "throttled": float64(total.throttled),
		"firstCallSecondsIntoWindow": run.t0.Sub(windowsFrom(c.shape, run.t0, run.epoch, w)).Seconds()}
	r.add(Row{Scenario: "windows", Metric: "budget used, " + label, Value: used,
		Text: fmt.Sprintf("%.2f (%d of %d calls admitted in %d windows of %s: %s)",
			used, total.admitted, budget, n, w, strings.Join(admitted, " / ")),
		Target: "≥ 0.90", Pass: pass(used >= 0.9), Detail: detail})
	share := 0.0
	if total.calls > 0 {
		share = float64(total.throttled) / float64(total.calls)
	}
	r.add(Row{Scenario: "windows", Metric: "calls throttled, " + label, Value: share,
		Text:   fmt.Sprintf("%.1f%% (%d of %d)", 100*share, total.throttled, total.calls),
		Target: "≤ 1%", Pass: pass(share <= 0.01), Detail: detail})

	first := spread[0]
	row := Row{Scenario: "windows", Metric: "first window, calls in its first tenth, " + label, Value: first.share(),
		Text:   fmt.Sprintf("%.0f%% (%d of %d)", 100*first.share(), first.firstTenth, first.calls),
		Detail: map[string]float64{"firstTenth": float64(first.firstTenth), "calls": float64(first.calls)}}
	if c.given {
		row.Target, row.Pass = "≤ 20%", pass(first.share() <= 0.2)
	} else {
		row.Text += ", not judged: the budget is not known yet"
	}
	r.add(row)

	if n < 2 {
		return
	}
	worst := 0.0
	shares := make([]string, 0, n-1)
	for i, s := range spread[1:] {
		worst = max(worst, s.share())
		shares = append(shares, fmt.Sprintf("window %d %.0f%% of %d", i+2, 100*s.share(), s.calls))
	}
	r.add(Row{Scenario: "windows", Metric: "later windows, most calls in a first tenth, " + label, Value: worst,
		Text:   fmt.Sprintf("%.0f%% (%s)", 100*worst, strings.Join(shares, ", ")),
		Target: "≤ 20%", Pass: pass(worst <= 0.2), Detail: map[string]float64{"worstShare": worst}})
}
