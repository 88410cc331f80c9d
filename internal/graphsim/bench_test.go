package graphsim

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"testing"
)

// discardWriter is the cheapest http.ResponseWriter, so that a handler
// benchmark measures the handler rather than a recorder.
type discardWriter struct {
	header http.Header
	code   int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.header }
func (w *discardWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}

// benchSiteID returns a distinct well-formed site id.
func benchSiteID(n int) string {
	return fmt.Sprintf("contoso.sharepoint.com,%08x-1111-4111-8111-111111111111,%08x-2222-4222-8222-222222222222", n, n)
}

// BenchmarkServeGraph runs the Graph handler in process (no sockets) for
// add calls of 20 sites spread over 1,000 users: the simulator's own CPU
// cost per call, as the pipeline benchmark pays it.
func BenchmarkServeGraph(b *testing.B) {
	const users, perCall = 1000, 20
	for _, tc := range []struct {
		name  string
		opts  Options
		op    string
		known bool
	}{
		{name: "add/known", op: opAdd, known: true},
		{name: "add/any", op: opAdd, opts: Options{AllowAnySite: true}},
		{name: "remove/any", op: opRemove, opts: Options{AllowAnySite: true}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const pool = 2000
			ids := make([]string, pool)
			for i := range ids {
				ids[i] = benchSiteID(i)
			}
			opts := tc.opts
			if tc.known {
				opts.Sites = ids
			}
			s := newSim(b, opts)
			token := fetchToken(b, s)
			bodies := make([][]byte, 64)
			for i := range bodies {
				var batch []string
				for j := range perCall {
					batch = append(batch, ids[(i*perCall+j)%pool])
				}
				bodies[i] = []byte(idsBody(b, batch...))
			}
			paths := make([]string, users)
			for i := range paths {
				paths[i] = "/v1.0/users/" + url.PathEscape(fmt.Sprintf("user-%04d@contoso.com", i)) + "/followedSites/" + tc.op
			}
			h := s.graphServer.Handler
			w := &discardWriter{header: make(http.Header)}
			want := http.StatusOK
			if tc.op == opRemove {
				want = http.StatusNoContent
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if i%4096 == 4095 {
					// Keep the call record from growing without bound.
					b.StopTimer()
					s.Reset()
					b.StartTimer()
				}
				req, err := http.NewRequest(http.MethodPost, "http://graph"+paths[i%users], bytes.NewReader(bodies[i%len(bodies)]))
				if err != nil {
					b.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("client-request-id", "7e5f5d7b-8d1c-4f44-9a43-6f6b0c1d2e3f")
				clear(w.header)
				w.code, w.n = 0, 0
				h.ServeHTTP(w, req)
				if w.code != want {
					b.Fatalf("status: got %d, want %d", w.code, want)
				}
			}
		})
	}
}
