package testkit

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// StartSim starts the Graph simulator, closed when the test ends (and its
// listener errors reported).
func StartSim(t testing.TB, opts graphsim.Options) *graphsim.Server {
	t.Helper()
	sim, err := graphsim.New(opts)
	if err != nil {
		t.Fatalf("graphsim: %v", err)
	}
	t.Cleanup(func() {
		sim.Close()
		if err := sim.Err(); err != nil {
			t.Errorf("graphsim: %v", err)
		}
	})
	return sim
}

// ConsumerEnv is the environment of a consumer pointed at natsURL (one URL or
// several, comma-separated) and sim: Graph URL, authority, credentials, a CA
// file written to t.TempDir(), an ephemeral ops address and log level warn.
// settings come last, so they win. Variables the test process inherited
// that configure a consumer (NATS_*, SITEFOLLOW_*, AZURE_*) are dropped.
func ConsumerEnv(t testing.TB, natsURL string, sim *graphsim.Server, settings map[string]string) []string {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, sim.CertPEM(), 0o600); err != nil {
		t.Fatalf("write CA file: %v", err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NATS_") || strings.HasPrefix(kv, "SITEFOLLOW_") || strings.HasPrefix(kv, "AZURE_") ||
			strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"NATS_URL="+natsURL,
		"SITEFOLLOW_GRAPH_URL="+sim.GraphURL(),
		"AZURE_AUTHORITY_HOST="+sim.AuthorityURL(),
		"AZURE_TENANT_ID="+sim.TenantID(),
		"AZURE_CLIENT_ID="+sim.ClientID(),
		"AZURE_CLIENT_SECRET="+sim.ClientSecret(),
		"SITEFOLLOW_CA_FILE="+ca,
		"SITEFOLLOW_HTTP_ADDR=127.0.0.1:0",
		"SITEFOLLOW_LOG_LEVEL=warn",
		// No nats CLI context of whoever runs the tests applies.
		"XDG_CONFIG_HOME="+t.TempDir(),
	)
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		env = append(env, k+"="+settings[k])
	}
	return env
}

// ConsumerOptions say how to start a consumer process.
type ConsumerOptions struct {
	// Exe is the binary; it is run as `Exe run`. Tests in cmd/consumer pass
	// os.Args[0] with SITEFOLLOW_TEST_MAIN=1 in Env.
	Exe string
	// Env is the whole environment (see ConsumerEnv).
	Env []string
	// Name labels the process in logs and failure output (default
	// "consumer").
	Name string
}

// Consumer is a consumer running as a child process.
type Consumer struct {
	t       testing.TB
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{}

	mu  sync.Mutex
	err error // exit status, once done
}

// tailLines is how much of each consumer's log a failing test prints.
const tailLines = 60

// StartConsumer runs `opts.Exe run` with opts.Env, its output in a file in
// t.TempDir(). When the test ends the process is killed if still running;
// if the test failed, the tail of its log is printed, and a data race the
// race detector reported in the child fails the test.
func StartConsumer(t testing.TB, opts ConsumerOptions) *Consumer {
	t.Helper()
	name := cmp.Or(opts.Name, "consumer")
	f, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	if err != nil {
		t.Fatalf("consumer %s log: %v", name, err)
	}
	c := &Consumer{t: t, name: name, logPath: f.Name(), logFile: f, done: make(chan struct{})}
	c.cmd = exec.Command(opts.Exe, "run")
	c.cmd.Env = opts.Env
	c.cmd.Stdout, c.cmd.Stderr = f, f
	if err := c.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start consumer %s: %v", name, err)
	}
	go func() {
		err := c.cmd.Wait()
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		f.Close()
		close(c.done)
	}()
	t.Cleanup(func() {
		if !c.Exited() {
			c.Kill()
			if err := c.Wait(time.Minute); err != nil && !c.Exited() {
				t.Errorf("consumer %s: %v", name, err)
			}
		}
		logs := c.Logs()
		if strings.Contains(logs, "WARNING: DATA RACE") {
			t.Errorf("consumer %s: the race detector reported a data race:\n%s", name, tail(logs, 200))
		} else if t.Failed() {
			t.Logf("consumer %s (pid %d) log, last %d lines:\n%s", name, c.Pid(), tailLines, tail(logs, tailLines))
		}
	})
	return c
}

// Name is the label given at start.
func (c *Consumer) Name() string { return c.name }

// Pid is the process id.
func (c *Consumer) Pid() int { return c.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (c *Consumer) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL (kill -9).
func (c *Consumer) Kill() {
	c.t.Helper()
	if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.t.Errorf("kill consumer %s: %v", c.name, err)
	}
}

// Term sends SIGTERM, asking for a clean shutdown.
func (c *Consumer) Term() {
	c.t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.t.Errorf("SIGTERM consumer %s: %v", c.name, err)
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// error (nil for status 0), or an error saying it is still running.
func (c *Consumer) Wait(timeout time.Duration) error {
	select {
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err
	case <-time.After(timeout):
		return fmt.Errorf("consumer %s still running after %v", c.name, timeout)
	}
}

// Logs returns everything the process wrote so far.
func (c *Consumer) Logs() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", c.logPath, err)
	}
	return string(b)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
