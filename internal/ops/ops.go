// Package ops serves the consumer's operational HTTP endpoints: liveness,
// readiness, Prometheus metrics and, when enabled, pprof profiles. It runs on
// its own mux so nothing registered on http.DefaultServeMux is exposed.
package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

const (
	// checkTimeout bounds each readiness check so a hung dependency makes
	// /readyz fail rather than hang past the prober's own timeout.
	checkTimeout = 2 * time.Second
	// shutdownTimeout bounds graceful shutdown; a stuck scrape or profile
	// must not hold up process exit.
	shutdownTimeout = 5 * time.Second
)

// Check is one readiness condition. Func returns nil when the condition
// holds; it must honour ctx, which carries a short deadline.
type Check struct {
	Name string
	Func func(ctx context.Context) error
	// Failing is what /readyz says when the check fails, in place of the
	// error, which then appears only in the log: an error may name
	// endpoints, tenants, scopes or an identity provider's text, which
	// anyone who can reach the probe port should not read. Empty shows the
	// error itself.
	Failing string
	// Every, when positive, is how long a result is reused: probes within
	// it get the last result, and concurrent probes share one run of Func,
	// so probing cannot make Func run more often than once per Every (a
	// check that asks an identity provider must not ask it per probe).
	Every time.Duration
}

// checkState is what the server remembers of one check: the cached result,
// the run in progress, and the last state logged.
type checkState struct {
	mu      sync.Mutex
	has     bool // a result is cached
	at      time.Time
	err     error
	running chan struct{} // closed when the run in progress ends; nil if none

	logged  bool // a state was logged
	failing bool // the state logged last
}

// Server is the operational HTTP server.
type Server struct {
	addr    string
	checks  []Check
	states  []*checkState
	handler http.Handler
	log     zerolog.Logger

	mu   sync.Mutex
	ln   net.Listener
	live []Check
}

// SetLiveness makes /livez fail (503) while any of checks fails: for
// conditions the process cannot recover from by itself, so it is restarted.
// Checks must be quick and must not do I/O.
func (s *Server) SetLiveness(checks ...Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live = append([]Check(nil), checks...)
}

// New returns a server for addr (host:port) exposing reg on /metrics and
// reporting ready only while every check passes. Profiles are served by a
// server of their own (NewPprof), on an address that need not be reachable
// by probes and scrapers.
func New(addr string, reg *prometheus.Registry, checks []Check, logger zerolog.Logger) *Server {
	s := &Server{
		addr:   addr,
		checks: append([]Check(nil), checks...),
		log:    logger.With().Str("component", "ops").Logger(),
	}
	for range s.checks {
		s.states = append(s.states, &checkState{})
	}
	s.handler = s.mux(reg)
	return s
}

// NewPprof returns a server for addr serving only /debug/pprof. Profiles
// reveal the program's memory and code, so they get their own address
// (loopback by default) rather than the probe port.
func NewPprof(addr string, logger zerolog.Logger) *Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &Server{addr: addr, handler: mux, log: logger.With().Str("component", "pprof").Logger()}
}

// NewRegistry returns a registry with the Go runtime and process collectors
// already registered.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler returns the server's routes, for tests or for mounting elsewhere.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) mux(reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", s.livez)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:          reg,
		ErrorLog:          errorLog{s.log},
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	}))
	return mux
}

// livez is 200 while the process can still work; a failed liveness check
// names itself only (details are logged where the condition arose).
func (s *Server) livez(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	live := s.live
	s.mu.Unlock()
	for _, c := range live {
		if err := c.Func(r.Context()); err != nil {
			writeText(w, http.StatusServiceUnavailable, "not live\n"+c.Name+"\n")
			return
		}
	}
	writeText(w, http.StatusOK, "ok\n")
}

// readyz runs every check concurrently. A check that overruns its deadline
// without returning is reported as failed; its goroutine ends when the check
// does, writing to a buffered channel nobody needs to read.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), checkTimeout)
	defer cancel()
	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(s.checks))
	for i := range s.checks {
		go func() { results <- result{i, s.result(ctx, i)} }()
	}
	errs := make([]error, len(s.checks))
	answered := make([]bool, len(s.checks))
wait:
	for range s.checks {
		select {
		case res := <-results:
			errs[res.i], answered[res.i] = res.err, true
		case <-ctx.Done():
			break wait
		}
	}
	for i := range errs {
		if !answered[i] {
			errs[i] = fmt.Errorf("no answer: %w", ctx.Err())
		}
	}
	var failed []string
	for i, err := range errs {
		if err == nil {
			continue
		}
		shown := err.Error()
		if s.checks[i].Failing != "" {
			shown = s.checks[i].Failing
		}
		failed = append(failed, s.checks[i].Name+": "+shown)
	}
	if len(failed) > 0 {
		writeText(w, http.StatusServiceUnavailable, "not ready\n"+strings.Join(failed, "\n")+"\n")
		return
	}
	writeText(w, http.StatusOK, "ok\n")
}

// result is check i's verdict for one probe: a fresh run, or for a check
// with Every the cached result or the one of the run already in progress.
func (s *Server) result(ctx context.Context, i int) error {
	c, st := s.checks[i], s.states[i]
	if c.Every <= 0 {
		err := c.Func(ctx)
		s.note(i, err)
		return err
	}
	st.mu.Lock()
	if st.has && time.Since(st.at) < c.Every {
		err := st.err
		st.mu.Unlock()
		return err
	}
	running := st.running
	if running == nil {
		running = make(chan struct{})
		st.running = running
		// The run is shared by every probe waiting for it, so it must not
		// end when the probe that started it goes away.
		go s.run(context.WithoutCancel(ctx), i, running)
	}
	st.mu.Unlock()
	select {
	case <-running:
	case <-ctx.Done():
		return fmt.Errorf("no answer: %w", ctx.Err())
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.err
}

// run runs check i once, caches its result and logs a change of state.
func (s *Server) run(ctx context.Context, i int, done chan struct{}) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	err := s.checks[i].Func(ctx)
	st := s.states[i]
	st.mu.Lock()
	st.has, st.at, st.err, st.running = true, time.Now(), err, nil
	st.mu.Unlock()
	close(done)
	s.note(i, err)
}

// note logs check i's details when it starts or stops failing: once per
// change, not once per probe, and only here, never in /readyz's body for a
// check with Failing.
func (s *Server) note(i int, err error) {
	st := s.states[i]
	st.mu.Lock()
	failing := err != nil
	changed := !st.logged && failing || st.logged && st.failing != failing
	st.logged, st.failing = st.logged || failing, failing
	st.mu.Unlock()
	if !changed {
		return
	}
	if failing {
		s.log.Warn().Str("check", s.checks[i].Name).AnErr("error", err).Msg("readiness check failing")
		return
	}
	s.log.Info().Str("check", s.checks[i].Name).Msg("readiness check passing again")
}

func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// A failed write means the prober went away; there is no one to tell.
	if _, err := io.WriteString(w, body); err != nil {
		return
	}
}

// Listen binds the server's address, so bind errors surface at start-up and
// callers learn the port chosen for ":0". Run serves on this listener.
func (s *Server) Listen() (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr(), nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("ops listen on %s: %w", s.addr, err)
	}
	s.ln = ln
	return ln.Addr(), nil
}

// Run serves until ctx is cancelled, then shuts down gracefully within a
// few seconds. It listens first if Listen was not called. It returns nil
// after a clean shutdown and an error naming the address if it cannot listen
// or serving fails. Run is meant to be called once.
func (s *Server) Run(ctx context.Context) error {
	addr, err := s.Listen()
	if err != nil {
		return err
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()

	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          stdlog.New(errorLog{s.log}, "", 0),
	}
	s.log.Info().Stringer("addr", addr).Msg("ops server listening")
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("ops serve on %s: %w", addr, err)
	case <-ctx.Done():
	}

	// The parent context is already cancelled; shutdown needs its own clock.
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		s.log.Warn().Err(err).Msg("ops server did not drain in time; closing connections")
		if err := srv.Close(); err != nil {
			s.log.Warn().Err(err).Msg("ops server close")
		}
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("ops serve on %s: %w", addr, err)
	}
	s.log.Info().Msg("ops server stopped")
	return nil
}

// errorLog sends promhttp's and net/http's error messages to the logger.
type errorLog struct{ log zerolog.Logger }

// Println serves promhttp.Logger.
func (e errorLog) Println(v ...any) {
	e.log.Error().Msg(strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

// Write serves the standard logger that http.Server writes to.
func (e errorLog) Write(p []byte) (int, error) {
	e.log.Warn().Msg(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
