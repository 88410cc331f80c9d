package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

const (
	// cpuRate is throttlecpu's budget in calls per second: a small
	// tenant's, so that nearly everything the consumer holds waits.
	cpuRate = 10
	// cpuLimit is the most of one core the consumer may use meanwhile.
	cpuLimit = 0.10
	// userHZ is the unit of /proc/<pid>/stat's utime and stime: USER_HZ,
	// 100 on every Linux architecture Go runs on.
	userHZ = 100
)

// throttleCPU holds a large backlog of one-site requests against a token
// bucket of cpuRate calls/s (a second of burst, whole-second Retry-After)
// and reads the consumer process's CPU time (utime + stime) from
// /proc/<pid>/stat over cpuInterval, starting cpuWarmup after its first
// Graph call: waiting on Graph must cost next to nothing.
func (r *runner) throttleCPU(ctx context.Context) error {
	sz := r.size.budget
	var before, after time.Duration
	var from, to time.Time
	part := budgetPart{
		name: "throttlecpu",
		sim: graphsim.Options{AllowAnySite: true, Latency: simLatency,
			Budget: tokenBucketBudget(cpuRate, graphsim.RetryAfterWholeSeconds, 0)},
		events: sz.cpuEvents, users: sz.cpuUsers, oneSite: true,
		end: spanEnd(sz.cpuWarmup + sz.cpuInterval),
		measure: func(ctx context.Context, g *rig, t0, end time.Time) error {
			pid, err := g.consumerPID()
			if err != nil {
				return err
			}
			if err := g.sleepUntil(ctx, t0.Add(sz.cpuWarmup)); err != nil {
				return err
			}
			from = time.Now()
			if before, err = readCPU(pid); err != nil {
				return err
			}
			if err := g.sleepUntil(ctx, end); err != nil {
				return err
			}
			to = time.Now()
			after, err = readCPU(pid)
			return err
		},
	}
	run, err := r.runBudgetPart(ctx, part, r.logf)
	if err != nil {
		return err
	}
	r.noteAll(run.notes)
	wall := to.Sub(from)
	used := after - before
	share := used.Seconds() / wall.Seconds()
	w := throttleWindow(run.calls, from, to)
	throttled := 0.0
	if w.calls > 0 {
		throttled = float64(w.throttled) / float64(w.calls)
	}
	r.add(Row{Scenario: "throttlecpu", Metric: fmt.Sprintf("consumer CPU under a %d calls/s budget (share of one core)", cpuRate),
		Value: share,
		Text: fmt.Sprintf("%.1f%% (%.2f s of CPU in %.1f s; meanwhile %.1f calls/s admitted, %.1f%% throttled)",
			100*share, used.Seconds(), wall.Seconds(), float64(w.admitted)/wall.Seconds(), 100*throttled),
		Target: fmt.Sprintf("< %.0f%%", 100*cpuLimit), Pass: pass(share < cpuLimit),
		Detail: map[string]float64{"cpuSeconds": used.Seconds(), "wallSeconds": wall.Seconds(),
			"calls": float64(w.calls), "admitted": float64(w.admitted), "throttled": float64(w.throttled)}})
	return nil
}

// consumerPID is the process id of the consumer under test, which must be
// one child process.
func (g *rig) consumerPID() (int, error) {
	c, ok := g.proc.(*child)
	if !ok {
		return 0, fmt.Errorf("%s: the consumer under test is not one child process", g.name)
	}
	return c.cmd.Process.Pid, nil
}

// readCPU is the CPU time process pid has used, user and system.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu of %d: %w", pid, err)
	}
	ticks, err := parseStatCPU(b)
	if err != nil {
		return 0, fmt.Errorf("read cpu of %d: %w", pid, err)
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// errStat classifies /proc/<pid>/stat contents that do not parse.
var errStat = errors.New("unexpected /proc stat format")

// parseStatCPU returns utime + stime, in clock ticks, from the contents of
// /proc/<pid>/stat: "pid (comm) state ppid …", where comm may hold spaces
// and parentheses, so the fields are counted from its last ')'. utime and
// stime are fields 14 and 15, the 12th and 13th after comm.
func parseStatCPU(b []byte) (int64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name: %w", errStat)
	}
	fields := bytes.Fields(b[i+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("%d fields after the command name: %w", len(fields), errStat)
	}
	var sum int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(string(f), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", errStat, err)
		}
		sum += n
	}
	return sum, nil
}
