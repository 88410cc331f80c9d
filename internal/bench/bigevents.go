package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
)

const (
	// bigEventBytes is each bigevents request's size: a valid request
	// padded with an unknown field, which the consumer must ignore.
	bigEventBytes = 1_000_000
	// bigEventsLatency is the simulator's answer time in bigevents: slow
	// enough that requests pile up in the consumer while calls are out.
	bigEventsLatency = time.Second
	// bigEventsMemoryLimit is the Kubernetes manifest's memory limit.
	bigEventsMemoryLimit = 256 << 20
	// bigEventsMaxPayload lets the server take the 1 MB events and the
	// consumer's larger SITEFOLLOW_EVENT_MAX_BYTES.
	bigEventsMaxPayload = 2 << 20
)

// bigEventsMode is one way the consumer meets the big events.
type bigEventsMode struct {
	slug     string            // in part names and metrics
	what     string            // as printed
	settings map[string]string // consumer settings
	dead     bool              // every event is dead-lettered as invalidEvent
}

// bigEventsModes: with the default SITEFOLLOW_EVENT_MAX_BYTES every event
// is oversized and dead-lettered without a full parse; with the bound
// raised above the events' size they are decoded, batched and sent to
// Graph like any other.
func bigEventsModes() []bigEventsMode {
	return []bigEventsMode{
		{slug: "dead-lettered", what: "dead-lettered (default event bound)", dead: true},
		{slug: "processed", what: "processed (SITEFOLLOW_EVENT_MAX_BYTES 2 MiB)",
			settings: map[string]string{"SITEFOLLOW_EVENT_MAX_BYTES": strconv.Itoa(2 << 20)}},
	}
}

// bigEvents publishes a backlog of 1 MB requests, then starts the consumer
// against a Graph answering after a second, in both modes, and holds each
// run to the bounds: peak RSS within the manifest's 256 MiB and no
// client cut off by the server as a slow consumer.
func (r *runner) bigEvents(ctx context.Context) error {
	for _, m := range bigEventsModes() {
		pctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
		err := r.bigEventsPart(pctx, m)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) bigEventsPart(ctx context.Context, m bigEventsMode) error {
	n, users := r.size.bigEvents, r.size.bigEventsUsers
	part := "bigevents-" + m.slug
	g, err := newRig(rigOptions{
		name: part, dir: filepath.Join(r.opts.WorkDir, part),
		sim:      graphsim.Options{Sites: sitePool(), Latency: bigEventsLatency},
		settings: m.settings, exe: r.opts.Exe, baseEnv: r.opts.Env, logf: r.logf,
		maxPayload: bigEventsMaxPayload,
	})
	if err != nil {
		return err
	}
	defer g.close()
	if _, err := g.provision(ctx); err != nil {
		return err
	}
	r.logf("%s: publishing %d requests of %d bytes over %d users", part, n, bigEventBytes, users)
	gen := roundRobin(sitePool(), users)
	for i := range n {
		data, err := bigEvent(gen(i), bigEventBytes)
		if err != nil {
			return fmt.Errorf("%s: %w", part, err)
		}
		// One at a time: a pipeline of 1 MB publishes would only grow this
		// process, which is not measured.
		if _, err := g.js.Publish(ctx, subject, data); err != nil {
			return fmt.Errorf("%s: publish: %w", part, err)
		}
	}
	if err := g.startConsumer(); err != nil {
		return err
	}
	start := time.Now()
	finished := true
	left := uint64(0)
	if _, err := g.waitEmpty(ctx); err != nil {
		if ctx.Err() == nil || errors.Is(err, errConsumerExited) {
			return err
		}
		finished = false
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		var qerr error
		left, qerr = g.streamMsgs(qctx)
		cancel()
		if qerr != nil {
			r.note("%s: %v", g.name, qerr)
		}
	}
	wall := time.Since(start)
	counts := g.waitAcks(ctx, n)
	mem, err := g.stopConsumer()
	if err != nil {
		r.note("%v", err)
	}
	slow, err := slowConsumers(g.ns)
	if err != nil {
		return fmt.Errorf("%s: %w", part, err)
	}
	calls := g.sim.Calls()
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	deadLetters, derr := g.deadLetters(qctx)
	cancel()
	if derr != nil {
		r.note("%s: %v", part, derr)
	}

	detail := map[string]float64{"events": float64(n), "eventBytes": bigEventBytes, "users": float64(users),
		"latencySeconds": bigEventsLatency.Seconds(), "wallSeconds": wall.Seconds(), "acked": float64(counts.Distinct),
		"left": float64(left), "graphCalls": float64(len(calls)), "deadLetters": float64(deadLetters),
		"vmHWMBytes": float64(mem.HWM), "sampledMaxVmRSSBytes": float64(mem.SampledMax), "slowConsumers": float64(slow)}
	where := fmt.Sprintf("%s × %s, %s", shortCount(n), megabytes(bigEventBytes), m.what)
	outcome := fmt.Sprintf("%d acked, %d dead letters, %d Graph calls in %s", counts.Distinct, deadLetters, len(calls),
		wall.Round(100*time.Millisecond))
	if !finished {
		outcome = fmt.Sprintf("not drained, %d left after %s", left, wall.Round(time.Second))
	}
	// Every event ends where its mode says: dead-lettered without a Graph
	// call, or applied with no dead letter.
	settled := finished && counts.Distinct >= n
	if m.dead {
		settled = settled && deadLetters == uint64(n) && len(calls) == 0
	} else {
		settled = settled && deadLetters == 0 && len(calls) > 0
	}
	r.add(Row{Scenario: "bigevents", Metric: "settled, " + where, Value: float64(counts.Distinct), Text: outcome,
		Target: "all " + map[bool]string{true: "dead-lettered", false: "applied"}[m.dead], Pass: pass(settled), Detail: detail})
	r.add(Row{Scenario: "bigevents", Metric: "peak RSS, " + where, Value: float64(mem.HWM),
		Text:   fmt.Sprintf("%s (%.0f MiB)", megabytes(mem.HWM), float64(mem.HWM)/(1<<20)),
		Target: "≤ 256 MiB", Pass: pass(mem.HWM > 0 && mem.HWM <= bigEventsMemoryLimit), Detail: detail})
	r.add(Row{Scenario: "bigevents", Metric: "slow consumers, " + where, Value: float64(slow),
		Text: strconv.FormatInt(slow, 10), Target: "0", Pass: pass(slow == 0), Detail: detail})
	return nil
}

// bigEvent is req as producers encode it, padded to size bytes with an
// unknown field ("padding"), which the consumer ignores.
func bigEvent(req event.Request, size int) ([]byte, error) {
	b, err := encode(req)
	if err != nil {
		return nil, err
	}
	const field = `,"padding":""}`
	pad := size - len(b) - len(field) + 1 // the closing brace is replaced
	if pad < 0 || len(b) == 0 || b[len(b)-1] != '}' {
		return nil, fmt.Errorf("big event: %d bytes do not fit %d", len(b), size)
	}
	out := make([]byte, 0, size)
	out = append(out, b[:len(b)-1]...)
	out = append(out, `,"padding":"`...)
	out = append(out, bytes.Repeat([]byte{'x'}, pad)...)
	return append(out, `"}`...), nil
}

// slowConsumers is how many clients the server cut off as slow consumers
// since it started.
func slowConsumers(ns *server.Server) (int64, error) {
	v, err := ns.Varz(nil)
	if err != nil {
		return 0, fmt.Errorf("server varz: %w", err)
	}
	return v.SlowConsumers, nil
}

// deadLetters is how many messages the dead-letter stream holds.
func (g *rig) deadLetters(ctx context.Context) (uint64, error) {
	s, err := g.js.Stream(ctx, g.cfg.DLQStream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", g.cfg.DLQStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", g.cfg.DLQStream, err)
	}
	return info.State.Msgs, nil
}
