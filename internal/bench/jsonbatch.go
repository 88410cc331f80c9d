package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// jsonBatchRounds is how many times the full jsonbatch scenario runs each
// mode, alternating, so that its spread shows.
const jsonBatchRounds = 3

// jsonBatchSize is the jsonbatch scenario's load: one-site requests at
// rate over users for duration, each mode rounds times.
type jsonBatchSize struct {
	rate     float64
	users    int
	duration time.Duration
	rounds   int
}

func (r *runner) jsonBatchSizes() jsonBatchSize {
	if r.opts.Short {
		return jsonBatchSize{rate: 200, users: 200, duration: 2 * time.Second, rounds: 1}
	}
	return jsonBatchSize{rate: 500, users: 2_000, duration: 20 * time.Second, rounds: jsonBatchRounds}
}

// jsonBatchRun is what one run of one mode measured.
type jsonBatchRun struct {
	sites        int // sites applied (in 2xx answers)
	httpRequests int
	calls        int
	p50, p99     time.Duration
	cpu          time.Duration // consumer CPU over the run
}

func (m jsonBatchRun) perSite(n float64) float64 {
	if m.sites == 0 {
		return 0
	}
	return n / float64(m.sites)
}

// jsonBatch runs the same steady load (many users, a site or two each per
// linger, so the consumer has other users' calls in flight to combine)
// against a simulator with latency, with SITEFOLLOW_GRAPH_JSON_BATCH on and
// off, alternating, in the same process layout (one consumer child
// process), and compares HTTP requests and Graph calls per site,
// publish→ack latency and consumer CPU per site.
func (r *runner) jsonBatch(ctx context.Context) error {
	size := r.jsonBatchSizes()
	runs := map[bool][]jsonBatchRun{}
	for round := range size.rounds {
		for _, on := range []bool{true, false} {
			pctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
			m, err := r.jsonBatchRun(pctx, fmt.Sprintf("jsonbatch-%s-%d", onOff(on), round+1), on, size)
			cancel()
			if err != nil {
				return err
			}
			runs[on] = append(runs[on], m)
		}
	}
	figure := func(on bool, f func(jsonBatchRun) float64) (med, lo, hi float64) {
		var xs []float64
		for _, m := range runs[on] {
			xs = append(xs, f(m))
		}
		return median(xs), slices.Min(xs), slices.Max(xs)
	}
	httpPerSite := func(m jsonBatchRun) float64 { return m.perSite(float64(m.httpRequests)) }
	callsPerSite := func(m jsonBatchRun) float64 { return m.perSite(float64(m.calls)) }
	cpuPerSite := func(m jsonBatchRun) float64 { return m.perSite(m.cpu.Seconds() * 1000) }
	p50 := func(m jsonBatchRun) float64 { return m.p50.Seconds() }
	p99 := func(m jsonBatchRun) float64 { return m.p99.Seconds() }
	load := fmt.Sprintf("%s users, %.0f/s, %s latency", shortCount(size.users), size.rate, simLatency)
	spread := func(med, lo, hi float64, format string) string {
		if size.rounds == 1 {
			return fmt.Sprintf(format, med)
		}
		return fmt.Sprintf(format+" (%d rounds: "+format+"–"+format+")", med, size.rounds, lo, hi)
	}
	for _, on := range []bool{true, false} {
		mode := "JSON batching " + onOff(on)
		hm, hlo, hhi := figure(on, httpPerSite)
		cm, clo, chi := figure(on, callsPerSite)
		r.add(Row{Scenario: "jsonbatch", Metric: fmt.Sprintf("HTTP requests per site, %s, %s", mode, load), Value: hm,
			Text:   spread(hm, hlo, hhi, "%.3f") + "; Graph calls per site " + spread(cm, clo, chi, "%.3f"),
			Detail: map[string]float64{"min": hlo, "max": hhi, "callsPerSite": cm, "rounds": float64(size.rounds)}})
		pm, plo, phi := figure(on, p50)
		qm, qlo, qhi := figure(on, p99)
		r.add(Row{Scenario: "jsonbatch", Metric: fmt.Sprintf("p50 / p99 publish→ack, %s", mode), Value: qm,
			Text:   spread(pm*1000, plo*1000, phi*1000, "%.0f ms") + " / " + spread(qm*1000, qlo*1000, qhi*1000, "%.0f ms"),
			Detail: map[string]float64{"p50Seconds": pm, "p99Seconds": qm, "p99Min": qlo, "p99Max": qhi}})
		um, ulo, uhi := figure(on, cpuPerSite)
		r.add(Row{Scenario: "jsonbatch", Metric: fmt.Sprintf("consumer CPU per site, %s", mode), Value: um,
			Text:   spread(um, ulo, uhi, "%.3f ms"),
			Detail: map[string]float64{"min": ulo, "max": uhi}})
	}
	on, _, _ := figure(true, httpPerSite)
	off, _, _ := figure(false, httpPerSite)
	ratio := 0.0
	if off > 0 {
		ratio = on / off
	}
	calls, _, _ := figure(true, callsPerSite)
	callsOff, _, _ := figure(false, callsPerSite)
	r.add(Row{Scenario: "jsonbatch", Metric: "HTTP requests per site, on / off", Value: ratio,
		Text:   fmt.Sprintf("%.3f / %.3f = %.2f (Graph calls per site %.3f / %.3f: each still counts)", on, off, ratio, calls, callsOff),
		Target: "< 1", Pass: pass(on > 0 && ratio < 1),
		Detail: map[string]float64{"on": on, "off": off, "callsOn": calls, "callsOff": callsOff}})
	return nil
}

// jsonBatchRun runs one mode once: a consumer with JSON batching on or off,
// the steady load, then the figures.
func (r *runner) jsonBatchRun(ctx context.Context, part string, on bool, size jsonBatchSize) (jsonBatchRun, error) {
	var m jsonBatchRun
	g, err := r.newRig(part, graphsim.Options{Sites: sitePool(), Latency: simLatency},
		map[string]string{"SITEFOLLOW_GRAPH_JSON_BATCH": strconv.FormatBool(on)})
	if err != nil {
		return m, err
	}
	defer g.close()
	if _, err := g.provision(ctx); err != nil {
		return m, err
	}
	if err := g.startConsumer(); err != nil {
		return m, err
	}
	if err := g.waitPulling(ctx); err != nil {
		return m, err
	}
	pid, err := g.consumerPID()
	if err != nil {
		return m, err
	}
	cpu := cpuSpan{pid: pid}
	cpu.mark(time.Now())
	load, err := r.steadyLoadOf(ctx, g, part, size.rate, size.users, size.duration)
	if err != nil {
		return m, err
	}
	if _, err := g.waitEmpty(ctx); err != nil {
		return m, err
	}
	r.checkAcks(g, load.sent, g.waitAcks(ctx, load.sent))
	cpu.mark(time.Now())
	if _, err := g.stopConsumer(); err != nil {
		r.note("%v", err)
	}
	if cpu.err != nil {
		r.note("%s: consumer CPU: %v", part, cpu.err)
	} else {
		m.cpu = cpu.used[1] - cpu.used[0]
	}
	calls := g.sim.Calls()
	m.calls, m.httpRequests = len(calls), g.sim.HTTPRequests()
	for _, c := range calls {
		if c.Status >= 200 && c.Status < 300 {
			m.sites += len(c.SiteIDs)
		}
	}
	var lats []time.Duration
	g.pubs.each(func(seq uint64, at time.Time) {
		if acked, ok := g.acks.ackedAt(seq); ok {
			lats = append(lats, acked.Sub(at))
		}
	})
	sorted := sortedDurations(lats)
	m.p50, m.p99 = percentile(sorted, 50), percentile(sorted, 99)
	return m, nil
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
