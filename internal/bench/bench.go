// Package bench is sitefollow's benchmark harness. It measures the real
// consumer, run as a child process, against facts the consumer cannot
// shade: the request stream emptying, the acks it publishes (watched on
// $JS.ACK subjects), the Graph calls the simulator received, and the
// process's resident memory from /proc. Every scenario gets a fresh embedded
// NATS server and a fresh Graph simulator, and every compared figure is a
// ratio or bound measured in the same run, because the machines are shared
// and noisy.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// Options configure a run.
type Options struct {
	// Short shrinks every count about a hundredfold, keeping each
	// scenario's structure: it proves the harness works, nothing more.
	Short bool
	// Scenarios selects scenarios by name; empty runs them all.
	Scenarios []string
	// WorkDir holds each scenario's NATS store (removed afterwards) and the
	// consumer's log. It must exist.
	WorkDir string
	// Timeout bounds each scenario part (a scenario with two runs, such as
	// backlog, gets it twice). Default 10 minutes.
	Timeout time.Duration
	// Exe is the consumer binary, started as `Exe run`.
	Exe string
	// Env is the consumer's base environment; the harness adds the settings
	// pointing it at each scenario's NATS server and simulator.
	Env []string
	// Serve runs the consumer inside this process. Throughput uses it, so
	// that it shares the ceiling's process layout (see throughput); without
	// it throughput runs the child process only.
	Serve ServeFunc
	// Progress receives a line as each step starts; nil discards them.
	Progress io.Writer
}

// DefaultTimeout bounds each scenario part when Options.Timeout is 0.
const DefaultTimeout = 10 * time.Minute

// scenario is one named measurement; parts is how many runs it makes, each
// bounded by Options.Timeout.
type scenario struct {
	name  string
	parts int
	run   func(ctx context.Context) error
}

// scenarios lists the scenarios in the order they run; ceiling comes
// before throughput, which is compared with it.
func (r *runner) scenarios() []scenario {
	return []scenario{
		{"ceiling", 1, r.ceiling},
		{"throughput", 7, r.throughput},
		{"aggregation", 1, r.aggregation},
		{"throttled", 1, r.throttled},
		{"latency", 1, r.latency},
		{"naive", 2, r.naive},
		{"backlog", 2, r.backlog},
		{"scaleout", 2 * maxReplicas, r.scaleout},
		{"bigevents", len(bigEventsModes()), r.bigEvents},
		{"tokenbucket", len(fullBudgetSizes().tokenCases), r.tokenBucket},
		{"windows", 2, r.windows}, // two rounds of parts run side by side
		{"noretryafter", len(noRetryAfterModes()), r.noRetryAfter},
		{"sharedbudget", 1, r.sharedBudget},
		{"throttlecpu", 1, r.throttleCPU},
		{"manyusers", 2, r.manyUsers},
		{"jsonbatch", 2 * jsonBatchRounds, r.jsonBatch},
	}
}

// Names lists the scenarios in the order they run.
func Names() []string {
	var names []string
	for _, s := range new(runner).scenarios() {
		names = append(names, s.name)
	}
	return names
}

// ErrUnknownScenario is returned for a scenario name Names does not list.
var ErrUnknownScenario = errors.New("unknown scenario")

// Run runs the selected scenarios in order and reports on them. A scenario
// that fails is recorded in Report.Errors and the next one runs; Run itself
// fails only for bad options or when ctx ends.
func Run(ctx context.Context, o Options) (*Report, error) {
	r := &runner{opts: o, size: fullSizes()}
	selected, err := selectScenarios(r.scenarios(), o.Scenarios)
	if err != nil {
		return nil, err
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Exe == "" || o.WorkDir == "" {
		return nil, errors.New("bench: Exe and WorkDir are required")
	}
	base, err := baseSettings(o.Env)
	if err != nil {
		return nil, err
	}
	rep := &Report{
		Date:  time.Now().UTC().Truncate(time.Second),
		Short: o.Short,
		Machine: Machine{
			OS: runtime.GOOS, Arch: runtime.GOARCH, GOMAXPROCS: runtime.GOMAXPROCS(0),
			NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAverage: loadAverage(),
		},
		Consumer: ConsumerSettings{
			BatchMaxSites: base.BatchMaxSites, BatchLinger: base.BatchLinger.String(),
			MaxConcurrency: base.MaxConcurrency, MaxAckPending: base.MaxAckPending,
		},
	}
	r.opts.Timeout, r.rep = o.Timeout, rep
	if o.Short {
		r.size = shortSizes()
	}
	r.paired = slices.ContainsFunc(selected, func(s scenario) bool { return s.name == "ceiling" }) &&
		slices.ContainsFunc(selected, func(s scenario) bool { return s.name == "throughput" })
	for _, s := range selected {
		rep.Scenarios = append(rep.Scenarios, s.name)
		r.logf("== %s", s.name)
		sctx, cancel := context.WithTimeout(ctx, time.Duration(s.parts)*o.Timeout)
		start := time.Now()
		err := s.run(sctx)
		cancel()
		if err != nil {
			rep.Errors = append(rep.Errors, ScenarioError{Scenario: s.name, Error: err.Error()})
			r.logf("%s failed after %s: %v", s.name, time.Since(start).Round(time.Millisecond), err)
		} else {
			r.logf("%s done in %s", s.name, time.Since(start).Round(time.Millisecond))
		}
		if ctx.Err() != nil {
			return rep, fmt.Errorf("bench: %w", ctx.Err())
		}
	}
	return rep, nil
}

// selectScenarios picks the named scenarios from all, keeping run order.
func selectScenarios(all []scenario, names []string) ([]scenario, error) {
	if len(names) == 0 {
		return all, nil
	}
	var out []scenario
	for _, s := range all {
		if slices.Contains(names, s.name) {
			out = append(out, s)
		}
	}
	for _, n := range names {
		if !slices.Contains(Names(), n) {
			return nil, fmt.Errorf("bench: %w %q (have %s)", ErrUnknownScenario, n, strings.Join(Names(), ", "))
		}
	}
	return out, nil
}

// baseSettings are the consumer settings the caller's environment gives,
// before any rig points them somewhere; the credentials are placeholders
// because only the tuning matters here.
func baseSettings(env []string) (config.Config, error) {
	probe := append(append([]string(nil), env...),
		"AZURE_TENANT_ID="+graphsim.DefaultTenantID,
		"AZURE_CLIENT_ID="+graphsim.DefaultClientID,
		"AZURE_CLIENT_SECRET="+graphsim.DefaultClientSecret,
	)
	cfg, err := config.Load(nil, func(k string) string { return lookup(probe, k) }, io.Discard)
	if err != nil {
		return config.Config{}, fmt.Errorf("bench: consumer settings: %w", err)
	}
	return cfg, nil
}

// sizes are a run's counts and durations.
type sizes struct {
	throughputEvents, throughputUsers int // also the ceiling's
	throughputRounds                  int // ceiling/throughput pairs
	aggregationUsers                  int
	throttledUsers, throttledPerUser  int
	throttledSkip, throttledWindow    time.Duration
	latencyRate                       float64 // requests per second
	latencyUsers                      int
	latencyDuration                   time.Duration
	naiveEvents                       int
	pipelineEvents, pipelineUsers     int
	backlogSmall, backlogLarge        int
	backlogUsers                      int
	// scaleout drains scaleoutEvents one-site requests over scaleoutUsers
	// with 1..scaleoutReplicas (at most maxReplicas) consumers, without and
	// with a Graph budget.
	scaleoutEvents, scaleoutUsers, scaleoutReplicas int
	// bigevents publishes bigEvents requests of bigEventBytes each over
	// bigEventsUsers.
	bigEvents, bigEventsUsers int
	// shutdownTimeout is the consumer's SITEFOLLOW_SHUTDOWN_TIMEOUT where a
	// scenario stops it with work left (throttled), so stopping is quick.
	shutdownTimeout time.Duration
	// budget sizes the throttle-shape scenarios (tokenbucket, windows,
	// noretryafter, sharedbudget, throttlecpu).
	budget budgetSizes
}

func fullSizes() sizes {
	return sizes{
		throughputEvents: 200_000, throughputUsers: 1_000, throughputRounds: 3,
		aggregationUsers: 1_000,
		throttledUsers:   1_000, throttledPerUser: 100,
		throttledSkip: 5 * time.Second, throttledWindow: 30 * time.Second,
		latencyRate: 500, latencyUsers: 2_000, latencyDuration: 30 * time.Second,
		naiveEvents:    300,
		pipelineEvents: 20_000, pipelineUsers: 1_000,
		// Both backlogs are wider than the held window (200,000 messages by
		// default), so the growth row compares two full windows: memory
		// must follow the window, not the backlog.
		backlogSmall: 300_000, backlogLarge: 1_000_000, backlogUsers: 10_000,
		scaleoutEvents: 40_000, scaleoutUsers: 2_000, scaleoutReplicas: maxReplicas,
		bigEvents: 1_000, bigEventsUsers: 100,
		shutdownTimeout: 2 * time.Second,
		budget:          fullBudgetSizes(),
	}
}

// shortSizes divide the counts by about 100; users shrink too where the
// full count would leave each user a single request.
func shortSizes() sizes {
	return sizes{
		throughputEvents: 2_000, throughputUsers: 100, throughputRounds: 1,
		aggregationUsers: 10,
		throttledUsers:   100, throttledPerUser: 40,
		throttledSkip: time.Second, throttledWindow: 2 * time.Second,
		latencyRate: 500, latencyUsers: 200, latencyDuration: 2 * time.Second,
		naiveEvents:    30,
		pipelineEvents: 2_000, pipelineUsers: 100,
		backlogSmall: 1_000, backlogLarge: 10_000, backlogUsers: 100,
		// Two replicas prove the harness runs several; a third would only
		// add a second or two of process start and stop to every CI run.
		scaleoutEvents: 200, scaleoutUsers: 20, scaleoutReplicas: 2,
		bigEvents: 20, bigEventsUsers: 5,
		shutdownTimeout: time.Second,
		budget:          shortBudgetSizes(),
	}
}

// runner carries what scenarios share.
type runner struct {
	opts Options
	rep  *Report
	size sizes
	// ceilingRate is the ceiling's events/s, 0 until measured.
	ceilingRate float64
	// paired is set when both ceiling and throughput run: throughput then
	// measures the ceiling, alternating with itself.
	paired bool
}

func (r *runner) logf(format string, args ...any) {
	if r.opts.Progress != nil {
		fmt.Fprintf(r.opts.Progress, "bench: "+format+"\n", args...)
	}
}

func (r *runner) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.rep.Notes = append(r.rep.Notes, msg)
	r.logf("note: %s", msg)
}

// add records a row.
func (r *runner) add(row Row) {
	r.rep.Rows = append(r.rep.Rows, row)
	r.logf("%s %s: %s %s %s", row.Scenario, row.Metric, row.Text, row.Target, row.Result())
}

// newRig builds a rig for one part of a scenario, in its own directory.
func (r *runner) newRig(part string, sim graphsim.Options, settings map[string]string) (*rig, error) {
	return r.newRigIn(part, sim, settings, nil)
}

// newRigIn is newRig with the consumer run by serve in this process when
// serve is not nil.
func (r *runner) newRigIn(part string, sim graphsim.Options, settings map[string]string, serve ServeFunc) (*rig, error) {
	return newRig(rigOptions{
		serve:    serve,
		name:     part,
		dir:      filepath.Join(r.opts.WorkDir, part),
		sim:      sim,
		settings: settings,
		exe:      r.opts.Exe,
		baseEnv:  r.opts.Env,
		logf:     r.logf,
	})
}

// checkAcks notes when the ack subscription missed acks, which would make
// every ack-based figure of the part unreliable.
func (r *runner) checkAcks(g *rig, want int, got ackCounts) {
	dropped, err := g.acks.dropped()
	if err != nil {
		r.note("%s: %v", g.name, err)
	}
	if dropped > 0 {
		r.note("%s: the ack subscription dropped %d acks; ack-based figures are unreliable", g.name, dropped)
	}
	if got.Distinct < want {
		r.note("%s: saw acks for %d of %d requests although the stream emptied", g.name, got.Distinct, want)
	}
	if got.Unparsed > 0 {
		r.note("%s: %d ack subjects did not parse", g.name, got.Unparsed)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func pass(ok bool) *bool { return &ok }

// loadAverage is the first three fields of /proc/loadavg, or empty where
// there is none.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
