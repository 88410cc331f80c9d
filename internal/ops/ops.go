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
}

// Server is the operational HTTP server.
type Server struct {
	addr    string
	checks  []Check
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

// New returns a server for addr (host:port) exposing reg on /metrics,
// reporting ready only while every check passes, and serving /debug/pprof
// when pprof is true.
func New(addr string, reg *prometheus.Registry, checks []Check, pprof bool, logger zerolog.Logger) *Server {
	s := &Server{
		addr:   addr,
		checks: append([]Check(nil), checks...),
		log:    logger.With().Str("component", "ops").Logger(),
	}
	s.handler = s.mux(reg, pprof)
	return s
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

func (s *Server) mux(reg *prometheus.Registry, withPprof bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", s.livez)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:          reg,
		ErrorLog:          errorLog{s.log},
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
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
	for i, c := range s.checks {
		go func() { results <- result{i, c.Func(ctx)} }()
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
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", s.checks[i].Name, err))
		}
	}
	if len(failed) > 0 {
		s.log.Debug().Strs("failing", failed).Msg("not ready")
		writeText(w, http.StatusServiceUnavailable, "not ready\n"+strings.Join(failed, "\n")+"\n")
		return
	}
	writeText(w, http.StatusOK, "ok\n")
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
