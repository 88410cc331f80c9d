package ops

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sitefollow/sitefollow/internal/testkit"
)

func get(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	return getCtx(t, context.Background(), h, method, path)
}

func getCtx(t *testing.T, ctx context.Context, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, method, path, nil))
	return rec.Code, rec.Body.String()
}

func TestLivez(t *testing.T) {
	s := New("127.0.0.1:0", NewRegistry(), []Check{{Name: "never", Func: func(context.Context) error { return errors.New("down") }}}, zerolog.Nop())
	tests := []struct {
		method string
		want   int
	}{
		{http.MethodGet, http.StatusOK},
		{http.MethodHead, http.StatusOK},
		{http.MethodPost, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			code, body := get(t, s.Handler(), tt.method, "/livez")
			if code != tt.want {
				t.Errorf("%s /livez = %d, want %d", tt.method, code, tt.want)
			}
			if tt.method == http.MethodGet && body != "ok\n" {
				t.Errorf("GET /livez body = %q, want %q", body, "ok\n")
			}
		})
	}
}

func TestReadyz(t *testing.T) {
	pass := func(context.Context) error { return nil }
	fail := func(context.Context) error { return errors.New("connection refused") }
	needsDeadline := func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("check ran without a deadline")
		}
		return nil
	}
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	ignoresCtx := func(context.Context) error {
		<-stuck
		return nil
	}

	tests := []struct {
		name     string
		checks   []Check
		short    bool // cut the request deadline to keep the hung case quick
		want     int
		wantBody []string
		notBody  []string
	}{
		{name: "no checks", want: http.StatusOK, wantBody: []string{"ok"}},
		{name: "all pass", checks: []Check{{Name: "nats", Func: pass}, {Name: "graph", Func: needsDeadline}}, want: http.StatusOK, wantBody: []string{"ok"}},
		{
			name:     "one fails",
			checks:   []Check{{Name: "nats", Func: fail}, {Name: "consumer", Func: pass}},
			want:     http.StatusServiceUnavailable,
			wantBody: []string{"not ready", "nats: connection refused"},
			notBody:  []string{"consumer"},
		},
		{
			name:     "all fail, listed in order",
			checks:   []Check{{Name: "a", Func: fail}, {Name: "b", Func: fail}},
			want:     http.StatusServiceUnavailable,
			wantBody: []string{"a: connection refused\nb: connection refused"},
		},
		{
			name:     "check ignoring its deadline",
			checks:   []Check{{Name: "hung", Func: ignoresCtx}, {Name: "nats", Func: pass}},
			short:    true,
			want:     http.StatusServiceUnavailable,
			wantBody: []string{"hung: no answer: context deadline exceeded"},
			notBody:  []string{"nats"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New("127.0.0.1:0", NewRegistry(), tt.checks, zerolog.Nop())
			// The checks' deadline is the earlier of the request's and
			// checkTimeout, so a short request deadline speeds up the hung case.
			ctx := context.Background()
			if tt.short {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Second)
				defer cancel()
			}
			code, body := getCtx(t, ctx, s.Handler(), http.MethodGet, "/readyz")
			if code != tt.want {
				t.Errorf("GET /readyz = %d, want %d; body %q", code, tt.want, body)
			}
			for _, w := range tt.wantBody {
				if !strings.Contains(body, w) {
					t.Errorf("body %q lacks %q", body, w)
				}
			}
			for _, n := range tt.notBody {
				if strings.Contains(body, n) {
					t.Errorf("body %q mentions passing check %q", body, n)
				}
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sitefollow_test_events_total", Help: "Test events."})
	reg.MustRegister(c)
	c.Add(3)
	s := New("127.0.0.1:0", reg, nil, zerolog.Nop())

	code, body := get(t, s.Handler(), http.MethodGet, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d, want 200", code)
	}
	for _, want := range []string{"sitefollow_test_events_total 3", "go_goroutines", "process_start_time_seconds"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestPprof(t *testing.T) {
	paths := []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap?debug=1", "/debug/pprof/symbol"}
	tests := []struct {
		name   string
		server *Server
		want   int
	}{
		{"ops server", New("127.0.0.1:0", NewRegistry(), nil, zerolog.Nop()), http.StatusNotFound},
		{"pprof server", NewPprof("127.0.0.1:0", zerolog.Nop()), http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range paths {
				if code, _ := get(t, tt.server.Handler(), http.MethodGet, p); code != tt.want {
					t.Errorf("GET %s: got %d, want %d", p, code, tt.want)
				}
			}
		})
	}
	for _, p := range []string{"/livez", "/readyz", "/metrics"} {
		if code, _ := get(t, NewPprof("127.0.0.1:0", zerolog.Nop()).Handler(), http.MethodGet, p); code != http.StatusNotFound {
			t.Errorf("pprof server GET %s: got %d, want 404", p, code)
		}
	}
}

// TestReadyzCachedCheck probes a failing check with Every and Failing set
// from 50 goroutines at once: the check runs once, the body shows only
// Failing, and the error is logged once.
func TestReadyzCachedCheck(t *testing.T) {
	const secretish = "https://login.example.test/tenant/oauth2/v2.0/token AADSTS7000215"
	var mu sync.Mutex
	runs := 0
	release := make(chan struct{})
	check := func(context.Context) error {
		mu.Lock()
		runs++
		mu.Unlock()
		<-release
		return errors.New(secretish)
	}
	var logs testkit.SyncBuffer
	s := New("127.0.0.1:0", NewRegistry(), []Check{
		{Name: "token", Func: check, Every: time.Hour, Failing: "cannot obtain a Graph token (see log)"},
		{Name: "nats", Func: func(context.Context) error { return nil }},
	}, zerolog.New(&logs))

	const probes = 50
	bodies := make(chan string, probes)
	var wg sync.WaitGroup
	for range probes {
		wg.Go(func() {
			code, body := get(t, s.Handler(), http.MethodGet, "/readyz")
			if code != http.StatusServiceUnavailable {
				t.Errorf("GET /readyz: got %d, want 503", code)
			}
			bodies <- body
		})
	}
	// Let the probes pile up on the one run before it answers.
	waitUntil(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return runs > 0
	})
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(bodies)
	// And later probes within Every reuse the result.
	for range 5 {
		get(t, s.Handler(), http.MethodGet, "/readyz")
	}

	mu.Lock()
	defer mu.Unlock()
	if runs != 1 {
		t.Errorf("check runs for %d probes: got %d, want 1", probes+5, runs)
	}
	want := "not ready\ntoken: cannot obtain a Graph token (see log)\n"
	for body := range bodies {
		if body != want {
			t.Errorf("body: got %q, want %q", body, want)
			break
		}
	}
	if n := strings.Count(logs.String(), secretish); n != 1 {
		t.Errorf("log lines with the check's error: got %d, want 1:\n%s", n, logs.String())
	}
}

// TestReadyzLogsChanges logs a check's state when it changes, not per probe.
func TestReadyzLogsChanges(t *testing.T) {
	var mu sync.Mutex
	var err error
	check := func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		return err
	}
	set := func(e error) {
		mu.Lock()
		defer mu.Unlock()
		err = e
	}
	var logs testkit.SyncBuffer
	s := New("127.0.0.1:0", NewRegistry(), []Check{{Name: "nats", Func: check}}, zerolog.New(&logs))
	for _, e := range []error{nil, nil, errors.New("down"), errors.New("down"), errors.New("down"), nil, nil} {
		set(e)
		get(t, s.Handler(), http.MethodGet, "/readyz")
	}
	got := logs.String()
	if n := strings.Count(got, "readiness check failing"); n != 1 {
		t.Errorf("failing lines: got %d, want 1:\n%s", n, got)
	}
	if n := strings.Count(got, "readiness check passing again"); n != 1 {
		t.Errorf("passing lines: got %d, want 1:\n%s", n, got)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	for _, listenFirst := range []bool{true, false} {
		name := "Run listens"
		if listenFirst {
			name = "Listen then Run"
		}
		t.Run(name, func(t *testing.T) {
			s := New("127.0.0.1:0", NewRegistry(), nil, zerolog.Nop())
			if listenFirst {
				addr, err := s.Listen()
				if err != nil {
					t.Fatalf("Listen: %v", err)
				}
				if addr.(*net.TCPAddr).Port == 0 {
					t.Fatalf("Listen addr = %v, want the chosen port", addr)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()

			// Listen is idempotent, so it tells us the address Run serves on.
			addr, err := s.Listen()
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			url := "http://" + addr.String() + "/livez"
			resp, err := http.Get(url)
			if err != nil {
				t.Fatalf("GET %s: %v", url, err)
			}
			body, err := io.ReadAll(resp.Body)
			if cerr := resp.Body.Close(); cerr != nil {
				t.Errorf("close body: %v", cerr)
			}
			if err != nil || resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
				t.Fatalf("GET %s = %d %q (err %v), want 200 ok", url, resp.StatusCode, body, err)
			}

			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run after cancel = %v, want nil", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return after its context was cancelled")
			}
			if resp, err := http.Get(url); err == nil {
				t.Errorf("GET %s after shutdown = %d, want connection error", url, resp.StatusCode)
				if cerr := resp.Body.Close(); cerr != nil {
					t.Errorf("close body: %v", cerr)
				}
			}
		})
	}
}

func TestListenErrorNamesAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer func() {
		if err := busy.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	addr := busy.Addr().String()
	s := New(addr, NewRegistry(), nil, zerolog.Nop())

	if _, err := s.Listen(); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("Listen on busy %s = %v, want error naming the address", addr, err)
	}
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("Run on busy %s = %v, want error naming the address", addr, err)
	}
}
