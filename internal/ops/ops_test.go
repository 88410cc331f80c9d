package ops

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
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
	s := New("127.0.0.1:0", NewRegistry(), []Check{{"never", func(context.Context) error { return errors.New("down") }}}, false, zerolog.Nop())
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
		{name: "all pass", checks: []Check{{"nats", pass}, {"graph", needsDeadline}}, want: http.StatusOK, wantBody: []string{"ok"}},
		{
			name:     "one fails",
			checks:   []Check{{"nats", fail}, {"consumer", pass}},
			want:     http.StatusServiceUnavailable,
			wantBody: []string{"not ready", "nats: connection refused"},
			notBody:  []string{"consumer"},
		},
		{
			name:     "all fail, listed in order",
			checks:   []Check{{"a", fail}, {"b", fail}},
			want:     http.StatusServiceUnavailable,
			wantBody: []string{"a: connection refused\nb: connection refused"},
		},
		{
			name:     "check ignoring its deadline",
			checks:   []Check{{"hung", ignoresCtx}, {"nats", pass}},
			short:    true,
			want:     http.StatusServiceUnavailable,
			wantBody: []string{"hung: no answer: context deadline exceeded"},
			notBody:  []string{"nats"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New("127.0.0.1:0", NewRegistry(), tt.checks, false, zerolog.Nop())
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
	s := New("127.0.0.1:0", reg, nil, false, zerolog.Nop())

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
	for _, enabled := range []bool{false, true} {
		s := New("127.0.0.1:0", NewRegistry(), nil, enabled, zerolog.Nop())
		want := http.StatusNotFound
		if enabled {
			want = http.StatusOK
		}
		for _, p := range paths {
			if code, _ := get(t, s.Handler(), http.MethodGet, p); code != want {
				t.Errorf("pprof enabled=%v: GET %s = %d, want %d", enabled, p, code, want)
			}
		}
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	for _, listenFirst := range []bool{true, false} {
		name := "Run listens"
		if listenFirst {
			name = "Listen then Run"
		}
		t.Run(name, func(t *testing.T) {
			s := New("127.0.0.1:0", NewRegistry(), nil, false, zerolog.Nop())
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
	s := New(addr, NewRegistry(), nil, false, zerolog.Nop())

	if _, err := s.Listen(); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("Listen on busy %s = %v, want error naming the address", addr, err)
	}
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("Run on busy %s = %v, want error naming the address", addr, err)
	}
}
