package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/natsembed"
	"github.com/sitefollow/sitefollow/internal/provision"
)

// errConsumerExited reports that the consumer under test stopped on its own.
var errConsumerExited = errors.New("consumer exited")

// rig is one scenario's private world: a fresh embedded NATS server with its
// own store, a fresh Graph simulator, the benchmark's connections to NATS,
// and the settings the consumer under test runs with.
type rig struct {
	name string
	dir  string
	ns   *server.Server
	sim  *graphsim.Server

	nc   *nats.Conn // publishing and stream inspection
	js   jetstream.JetStream
	ackc *nats.Conn // acks only, so publishing never delays their arrival
	acks *ackLog
	pubs *pubLog

	cfg   config.Config // what the consumer under test reads from env
	env   []string
	exe   string
	serve ServeFunc // when set, the consumer runs in this process
	proc  consumerUnderTest
	logf  func(format string, args ...any)
}

// consumerUnderTest is the service a scenario measures: the binary in a
// child process, or the same serve code inside this process.
type consumerUnderTest interface {
	// done is closed when the consumer stopped, by itself or by stop.
	done() <-chan struct{}
	// exitError says why it stopped; valid once done is closed.
	exitError() error
	// stop asks it to shut down cleanly and waits up to grace.
	stop(grace time.Duration) (memory, error)
	kill()
}

// ServeFunc runs the consumer in this process until ctx ends, as `run`
// does; the benchmark uses it where the figure compared is a rate beside
// the in-process ceiling, so both share one process layout.
// It logs to logs, as the child process logs to its log file.
type ServeFunc func(ctx context.Context, cfg config.Config, logs io.Writer) error

// inProcess is the consumer running in this process. Its memory cannot be
// told apart from NATS's and the simulator's, so it reports none.
type inProcess struct {
	logs   *os.File
	cancel context.CancelFunc
	exited chan struct{}
	err    error // valid once exited is closed
}

func startInProcess(serve ServeFunc, cfg config.Config, logPath string) (*inProcess, error) {
	logs, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("consumer log: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{logs: logs, cancel: cancel, exited: make(chan struct{})}
	go func() {
		defer close(p.exited)
		p.err = serve(ctx, cfg, logs)
		if err := logs.Close(); err != nil && p.err == nil {
			p.err = fmt.Errorf("consumer log: %w", err)
		}
	}()
	return p, nil
}

func (p *inProcess) done() <-chan struct{} { return p.exited }

func (p *inProcess) exitError() error {
	if p.err == nil {
		return errConsumerExited
	}
	return fmt.Errorf("%w: %w", errConsumerExited, p.err)
}

func (p *inProcess) stop(grace time.Duration) (memory, error) {
	p.cancel()
	select {
	case <-p.exited:
		return memory{}, p.err
	case <-time.After(grace):
		return memory{}, fmt.Errorf("in-process consumer still running %s after cancel", grace)
	}
}

func (p *inProcess) kill() {
	p.cancel()
	<-p.exited
}

// rigOptions say how to build a rig.
type rigOptions struct {
	name     string
	dir      string
	sim      graphsim.Options
	settings map[string]string // consumer settings for this scenario
	exe      string
	serve    ServeFunc
	baseEnv  []string
	logf     func(format string, args ...any) // progress and warnings
	// maxPayload is the NATS server's max_payload; 0 keeps its default.
	maxPayload int32
}

// newRig starts NATS and the simulator and connects to NATS. On error it
// leaves nothing running.
func newRig(o rigOptions) (_ *rig, err error) {
	g := &rig{name: o.name, dir: o.dir, exe: o.exe, serve: o.serve, pubs: &pubLog{}, logf: o.logf}
	defer func() {
		if err != nil {
			g.close()
		}
	}()
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	g.ns, err = natsembed.Start(natsembed.Options{StoreDir: filepath.Join(o.dir, "jetstream"), MaxPayload: o.maxPayload})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	g.sim, err = graphsim.New(o.sim)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	caFile := filepath.Join(o.dir, "graphsim-ca.pem")
	if err := os.WriteFile(caFile, g.sim.CertPEM(), 0o600); err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}

	// Configured exactly like the demo, pointed at this rig; the caller's
	// environment supplies any other setting, and the scenario's own
	// settings come last so they win.
	overrides := []string{
		"NATS_URL=" + g.ns.ClientURL(),
		"SITEFOLLOW_GRAPH_URL=" + g.sim.GraphURL(),
		"AZURE_AUTHORITY_HOST=" + g.sim.AuthorityURL(),
		"AZURE_TENANT_ID=" + g.sim.TenantID(),
		"AZURE_CLIENT_ID=" + g.sim.ClientID(),
		"AZURE_CLIENT_SECRET=" + g.sim.ClientSecret(),
		"SITEFOLLOW_CA_FILE=" + caFile,
		"SITEFOLLOW_HTTP_ADDR=127.0.0.1:0",
		"SITEFOLLOW_PROVISION=true",
		"SITEFOLLOW_LOG_LEVEL=warn",
	}
	// Nothing of the caller's own NATS set-up (a context, credentials)
	// applies to the embedded server.
	for _, k := range config.NATSEnv() {
		if lookup(overrides, k) == "" && k != "NATS_URL" {
			overrides = append(overrides, k+"=")
		}
	}
	overrides = append(overrides, "XDG_CONFIG_HOME="+o.dir)
	g.env = append(append([]string(nil), o.baseEnv...), overrides...)
	if lookup(g.env, "SITEFOLLOW_GRAPH_ORG") == "" {
		g.env = append(g.env, "SITEFOLLOW_GRAPH_ORG=Contoso")
	}
	for _, k := range sortedKeys(o.settings) {
		g.env = append(g.env, k+"="+o.settings[k])
	}
	g.cfg, err = config.Load(nil, func(k string) string { return lookup(g.env, k) }, io.Discard)
	if err != nil {
		return nil, fmt.Errorf("%s: consumer settings: %w", o.name, err)
	}

	g.nc, err = nats.Connect(g.ns.ClientURL(), nats.Name("sitefollow-bench"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	g.js, err = jetstream.New(g.nc,
		jetstream.WithPublishAsyncMaxPending(maxPublishPending),
		jetstream.WithPublishAsyncTimeout(time.Minute))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	g.ackc, err = nats.Connect(g.ns.ClientURL(), nats.Name("sitefollow-bench-acks"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	g.acks, err = watchAcks(g.ackc, g.cfg.Stream, g.cfg.Consumer)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	return g, nil
}

// lookup returns the value env holds for key; the last entry wins, as for
// exec.Cmd.Env.
func lookup(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// provision creates the streams and the durable consumer exactly as the
// consumer would, so a backlog can be published before it starts.
func (g *rig) provision(ctx context.Context) (jetstream.Consumer, error) {
	c, err := provision.Apply(ctx, g.js, provision.SpecFrom(g.cfg))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", g.name, err)
	}
	return c, nil
}

// close stops everything the rig started, the consumer first, and removes
// the JetStream store (large for big backlogs); the consumer's log stays.
func (g *rig) close() {
	if g.proc != nil {
		g.proc.kill()
	}
	if g.ackc != nil {
		g.ackc.Close()
	}
	if g.nc != nil {
		g.nc.Close()
	}
	if g.ns != nil {
		g.ns.Shutdown()
		g.ns.WaitForShutdown()
	}
	if g.sim != nil {
		g.sim.Close()
	}
	// The store can be gigabytes; failing to remove it is worth a word
	// but not a failed scenario.
	if err := os.RemoveAll(filepath.Join(g.dir, "jetstream")); err != nil {
		g.logf("%s: remove store: %v", g.name, err)
	}
}

// streamMsgs is how many requests the stream still holds: WorkQueue
// retention deletes a request once it is acknowledged.
func (g *rig) streamMsgs(ctx context.Context) (uint64, error) {
	s, err := g.js.Stream(ctx, g.cfg.Stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", g.cfg.Stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", g.cfg.Stream, err)
	}
	return info.State.Msgs, nil
}

// waitEmpty polls the request stream until it is empty, ctx ends or the
// consumer under test (if running) exits. It returns when it saw it empty.
func (g *rig) waitEmpty(ctx context.Context) (time.Time, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		n, err := g.streamMsgs(ctx)
		if err == nil && n == 0 {
			return time.Now(), nil
		}
		var exited <-chan struct{}
		if g.proc != nil {
			exited = g.proc.done()
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s: wait for the stream to empty (%d left): %w", g.name, n, ctx.Err())
		case <-exited:
			return time.Time{}, fmt.Errorf("%s: %w", g.name, g.proc.exitError())
		case <-tick.C:
		}
	}
}

// waitAcks waits until the ack log holds n distinct acks or a grace period
// passes, which leaves the last acks time to arrive after the stream
// emptied. It returns the counts either way.
func (g *rig) waitAcks(ctx context.Context, n int) ackCounts {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := g.acks.snapshot()
		if c.Distinct >= n || time.Now().After(deadline) || ctx.Err() != nil {
			return c
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitPulling waits until the consumer under test has a pull request
// waiting at the server: it is ready for work published now.
func (g *rig) waitPulling(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := g.js.Consumer(ctx, g.cfg.Stream, g.cfg.Consumer)
		if err == nil {
			info, ierr := c.Info(ctx)
			if ierr == nil && info.NumWaiting > 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: wait for the consumer to pull: %w", g.name, ctx.Err())
		case <-g.proc.done():
			return fmt.Errorf("%s: %w", g.name, g.proc.exitError())
		case <-tick.C:
		}
	}
}

// startConsumer starts the real consumer as a child process.
func (g *rig) startConsumer() error {
	logPath := filepath.Join(g.dir, "consumer.log")
	if g.serve != nil {
		p, err := startInProcess(g.serve, g.cfg, logPath)
		if err != nil {
			return fmt.Errorf("%s: %w", g.name, err)
		}
		g.proc = p
		return nil
	}
	p, err := startChild(g.exe, g.env, logPath, g.logf)
	if err != nil {
		return fmt.Errorf("%s: %w", g.name, err)
	}
	g.proc = p
	return nil
}

// stopConsumer stops the consumer under test with SIGTERM and waits for it.
// It returns its memory figures; a consumer that had to be killed or exited
// non-zero is an error.
func (g *rig) stopConsumer() (memory, error) {
	mem, err := g.proc.stop(g.cfg.ShutdownTimeout + 20*time.Second)
	if err != nil {
		return mem, fmt.Errorf("%s: %w", g.name, err)
	}
	return mem, nil
}

// memory is the consumer process's resident memory, in bytes.
type memory struct {
	// HWM is VmHWM (the kernel's resident high-water mark) read just before
	// SIGTERM: the peak while the consumer worked.
	HWM int64
	// SampledMax is the largest VmRSS seen by sampling every 100 ms.
	SampledMax int64
}

// child is the consumer under test, running as a separate process so that
// its memory is its own.
type child struct {
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	exited  chan struct{}
	waitErr error // valid once exited is closed

	logf func(format string, args ...any)

	mu         sync.Mutex
	sampledMax int64
}

func startChild(exe string, env []string, logPath string, logf func(string, ...any)) (*child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start consumer: %w", err)
	}
	cmd := exec.Command(exe, "run")
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		if cerr := f.Close(); cerr != nil {
			return nil, fmt.Errorf("start consumer: %w (closing log: %v)", err, cerr)
		}
		return nil, fmt.Errorf("start consumer: %w", err)
	}
	c := &child{cmd: cmd, logPath: logPath, logFile: f, exited: make(chan struct{}), logf: logf}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	go c.sample()
	return c, nil
}

// sample records the largest VmRSS until the process exits.
func (c *child) sample() {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.exited:
			return
		case <-tick.C:
		}
		st, err := readStatus(c.cmd.Process.Pid)
		if err != nil {
			continue // the process is exiting; exited closes next
		}
		c.mu.Lock()
		c.sampledMax = max(c.sampledMax, st.rss)
		c.mu.Unlock()
	}
}

// memory reads the process's figures now.
func (c *child) memory() (memory, error) {
	st, err := readStatus(c.cmd.Process.Pid)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		return memory{SampledMax: c.sampledMax}, err
	}
	c.sampledMax = max(c.sampledMax, st.rss)
	return memory{HWM: st.hwm, SampledMax: c.sampledMax}, nil
}

// stop reads the memory figures, sends SIGTERM and waits up to grace for a
// clean exit before killing the process.
func (c *child) stop(grace time.Duration) (memory, error) {
	mem, merr := c.memory()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.kill()
		return mem, fmt.Errorf("stop consumer: %w", err)
	}
	select {
	case <-c.exited:
	case <-time.After(grace):
		c.kill()
		return mem, fmt.Errorf("stop consumer: no exit %s after SIGTERM; killed%s", grace, c.logTail())
	}
	c.closeLog()
	if c.waitErr != nil {
		return mem, fmt.Errorf("stop consumer: %w%s", c.waitErr, c.logTail())
	}
	if merr != nil {
		return mem, fmt.Errorf("stop consumer: read memory: %w", merr)
	}
	return mem, nil
}

// kill ends the process at once, if it still runs, and waits for it.
func (c *child) kill() {
	select {
	case <-c.exited:
	default:
		if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			c.logf("kill consumer %d: %v", c.cmd.Process.Pid, err)
		}
		<-c.exited
	}
	c.closeLog()
}

func (c *child) closeLog() {
	if c.logFile == nil {
		return
	}
	if err := c.logFile.Close(); err != nil {
		c.logf("close %s: %v", c.logPath, err)
	}
	c.logFile = nil
}

// exitError describes an unexpected exit, with the end of the log.
func (c *child) done() <-chan struct{} { return c.exited }

func (c *child) exitError() error {
	<-c.exited
	c.closeLog()
	if c.waitErr != nil {
		return fmt.Errorf("%w: %w%s", errConsumerExited, c.waitErr, c.logTail())
	}
	return fmt.Errorf("%w unexpectedly with status 0%s", errConsumerExited, c.logTail())
}

// logTail is the end of the consumer's log, for error messages.
func (c *child) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	const keep = 2000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return fmt.Sprintf("\n--- end of %s ---\n%s", c.logPath, bytes.TrimSpace(b))
}

// procStatus holds the figures read from /proc/<pid>/status, in bytes.
type procStatus struct {
	rss, hwm int64
}

func readStatus(pid int) (procStatus, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, fmt.Errorf("read status of %d: %w", pid, err)
	}
	st, err := parseStatus(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return procStatus{}, fmt.Errorf("read status of %d: %w", pid, err)
	}
	return st, nil
}

// parseStatus reads VmRSS and VmHWM ("VmHWM:	  123456 kB") from a
// /proc/<pid>/status file.
func parseStatus(r io.Reader) (procStatus, error) {
	var st procStatus
	found := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return st, fmt.Errorf("unexpected %s line %q", key, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return st, fmt.Errorf("%s: %w", key, err)
		}
		if key == "VmRSS" {
			st.rss = kb << 10
		} else {
			st.hwm = kb << 10
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return st, err
	}
	if found < 2 {
		return st, errors.New("no VmRSS/VmHWM (process exited?)")
	}
	return st, nil
}

// startReplicas starts n consumers as child processes sharing the durable
// consumer, as n `run` replicas of a deployment do, each with its own log
// (replica-<i>.log). Together they are the rig's consumer under test, so
// waitEmpty and waitPulling notice any of them exiting, and stopConsumer
// and close stop all of them. On error none is left running.
func (g *rig) startReplicas(n int) (*replicaSet, error) {
	return g.startReplicasEnv(n, nil)
}

// startReplicasEnv is startReplicas with extra(i), when extra is not nil,
// added to the environment of replica i (0-based): settings that tell the
// replicas apart, such as SITEFOLLOW_GRAPH_ORG, which names each in its
// User-Agent.
func (g *rig) startReplicasEnv(n int, extra func(i int) []string) (*replicaSet, error) {
	if g.serve != nil {
		// Replicas are processes; several serve loops in this process would
		// share one Go runtime and measure nothing a deployment sees.
		return nil, fmt.Errorf("%s: start replicas: the rig runs its consumer in process", g.name)
	}
	members := make([]*child, 0, n)
	for i := range n {
		env := g.env
		if extra != nil {
			env = append(slices.Clone(g.env), extra(i)...)
		}
		c, err := startChild(g.exe, env, filepath.Join(g.dir, fmt.Sprintf("replica-%d.log", i+1)), g.logf)
		if err != nil {
			for _, m := range members {
				m.kill()
			}
			return nil, fmt.Errorf("%s: start replica %d of %d: %w", g.name, i+1, n, err)
		}
		members = append(members, c)
	}
	s := newReplicaSet(members)
	g.proc = s
	return s, nil
}

// replicaSet is several consumer processes acting as one consumer under
// test: done closes when the first of them exits (any exit during a
// measurement is a failure), and stop and kill act on all of them.
type replicaSet struct {
	members []*child
	exited  chan struct{} // closed when the first member exits
	once    sync.Once
	first   int // index of the first member to exit; valid once exited is closed

	// mems are each member's figures, in start order; set by stop.
	mems []memory
}

func newReplicaSet(members []*child) *replicaSet {
	s := &replicaSet{members: members, exited: make(chan struct{})}
	for i, m := range members {
		// One watcher per member, ending with the member's process, which
		// kill (and so rig.close) always ends.
		go func() {
			<-m.exited
			s.once.Do(func() {
				s.first = i
				close(s.exited)
			})
		}()
	}
	return s
}

func (s *replicaSet) done() <-chan struct{} { return s.exited }

func (s *replicaSet) exitError() error {
	<-s.exited
	return fmt.Errorf("replica %d of %d: %w", s.first+1, len(s.members), s.members[s.first].exitError())
}

// stop stops every member at once, so stopping takes one grace period
// rather than one per replica and no replica picks up the others'
// redeliveries meanwhile. The memory returned is the members' sum, the
// deployment's footprint; memories has each member's.
func (s *replicaSet) stop(grace time.Duration) (memory, error) {
	mems := make([]memory, len(s.members))
	errs := make([]error, len(s.members))
	var wg sync.WaitGroup
	for i, m := range s.members {
		wg.Go(func() {
			mems[i], errs[i] = m.stop(grace)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("replica %d of %d: %w", i+1, len(s.members), errs[i])
			}
		})
	}
	wg.Wait()
	s.mems = mems
	var total memory
	for _, m := range mems {
		total.HWM += m.HWM
		total.SampledMax += m.SampledMax
	}
	return total, errors.Join(errs...)
}

// memories returns each member's figures as stop read them; nil before.
func (s *replicaSet) memories() []memory { return s.mems }

func (s *replicaSet) kill() {
	for _, m := range s.members {
		m.kill()
	}
}
