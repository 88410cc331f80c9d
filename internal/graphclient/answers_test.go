package graphclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The tests in this file hold the memory that Graph answers cost to a bound
// however long the answers are: 64 concurrent calls each answered with 8 MiB
// must keep the client process within 256 MiB. The calls run in a child
// process (this test binary again, running TestAnswersChild), so the figure
// is that process's resident high-water mark (VmHWM), untouched by the
// scripted Graph and by tests running in parallel.

const (
	answersCalls     = 64
	answersBodyBytes = 8 << 20
	answersMaxRSS    = 256 << 20
	answersChildArg  = "answers-child"
)

// answersResult is what the child reports on its last line of output.
type answersResult struct {
	Outcomes map[string]int `json:"outcomes"` // "outcome/code" → sites
	HWMBytes int64          `json:"hwmBytes"`
}

func TestAnswersBoundedMemory(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("reads the child's VmHWM from /proc")
	}
	tests := []struct {
		name      string
		maxAnswer int   // Config.MaxResponseBytes
		maxMemory int64 // Config.MaxResponseMemory
		want      string
	}{
		// Each answer is far longer than a batch of 20 sites can need: not
		// read beyond the bound, tried again later, never applied.
		{name: "answers beyond a batch's need are not read", maxAnswer: ResponseBytesFor(20),
			want: Unresolved.String() + "/" + CodeInvalidResponse},
		// Each answer is allowed, but 64 of them at once are not: calls
		// take turns reading, three answers' worth at a time.
		{name: "concurrent answers share one bound", maxAnswer: answersBodyBytes + 64<<10, maxMemory: 3 * (answersBodyBytes + 64<<10),
			want: Applied.String() + "/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newLongAnswerGraph(t, answersCalls, answersBodyBytes)
			got := runAnswersChild(t, g.URL, tc.maxAnswer, tc.maxMemory)
			if got.Outcomes[tc.want] != answersCalls || len(got.Outcomes) != 1 {
				t.Errorf("outcomes = %v, want %d × %s", got.Outcomes, answersCalls, tc.want)
			}
			if limit := int64(answersMaxRSS * raceMemoryFactor); got.HWMBytes > limit {
				t.Errorf("client's peak RSS = %d MiB, want at most %d MiB", got.HWMBytes>>20, limit>>20)
			}
			t.Logf("client's peak RSS: %d MiB for %d concurrent %d MiB answers", got.HWMBytes>>20, answersCalls, answersBodyBytes>>20)
		})
	}
}

// newLongAnswerGraph answers every add with a valid 200 of about bodyBytes
// (the requested sites, one carrying a long name), sent without a
// Content-Length. It holds every answer until calls requests have arrived
// (or a generous deadline passed), so the answers are read concurrently.
func newLongAnswerGraph(t *testing.T, calls, bodyBytes int) *httptest.Server {
	t.Helper()
	pad := bytes.Repeat([]byte("x"), bodyBytes)
	var (
		mu      sync.Mutex
		arrived int
		all     = make(chan struct{})
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Value []struct {
				ID string `json:"id"`
			} `json:"value"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Value) == 0 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		arrived++
		if arrived == calls {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(time.Minute):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		id, err := json.Marshal(body.Value[0].ID)
		if err != nil {
			panic(err)
		}
		// Write errors mean the client stopped reading, as it should for
		// an answer longer than it allows.
		_, _ = fmt.Fprintf(w, `{"value":[{"id":%s,"name":"`, id)
		for off := 0; off < len(pad); off += 64 << 10 {
			if _, err := w.Write(pad[off:min(off+64<<10, len(pad))]); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, `"}]}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// runAnswersChild runs TestAnswersChild in a child process against graphURL
// and returns what it reports.
func runAnswersChild(t *testing.T, graphURL string, maxAnswer int, maxMemory int64) answersResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestAnswersChild$", "-test.count=1", "-test.v",
		answersChildArg, graphURL, strconv.Itoa(maxAnswer), strconv.FormatInt(maxMemory, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\nstdout:\n%s\nstderr:\n%s", err, tail(out), tail(stderr.Bytes()))
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "ANSWERS "); ok {
			var res answersResult
			if err := json.Unmarshal([]byte(rest), &res); err != nil {
				t.Fatalf("child's report %q: %v", rest, err)
			}
			return res
		}
	}
	t.Fatalf("child reported nothing; stdout:\n%s", tail(out))
	return answersResult{}
}

func tail(b []byte) []byte { return b[max(0, len(b)-4096):] }

// TestAnswersChild is the child of TestAnswersBoundedMemory; run on its own
// it does nothing.
func TestAnswersChild(t *testing.T) {
	args := flag.Args()
	if len(args) != 4 || args[0] != answersChildArg {
		t.Skip("runs only as TestAnswersBoundedMemory's child")
	}
	maxAnswer, err := strconv.Atoi(args[2])
	if err != nil {
		t.Fatalf("max answer %q: %v", args[2], err)
	}
	maxMemory, err := strconv.ParseInt(args[3], 10, 64)
	if err != nil {
		t.Fatalf("max memory %q: %v", args[3], err)
	}
	c, err := New(testConfig(t, args[1], &countingCredential{}, func(cfg *Config) {
		cfg.MaxAttempts = 1
		cfg.RequestTimeout = 2 * time.Minute
		cfg.MaxResponseBytes = maxAnswer
		cfg.MaxResponseMemory = maxMemory
		cfg.Logger = zerolog.Nop()
	}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	var (
		mu       sync.Mutex
		outcomes = map[string]int{}
		wg       sync.WaitGroup
	)
	for i := range answersCalls {
		wg.Go(func() {
			res := c.Apply(context.Background(), fmt.Sprintf("user%d", i), Add, siteIDs(i, i))
			key := res[0].Outcome.String() + "/"
			if res[0].Err != nil {
				key += res[0].Err.Code
			}
			mu.Lock()
			outcomes[key]++
			mu.Unlock()
		})
	}
	wg.Wait()
	hwm, err := selfHWM()
	if err != nil {
		t.Fatalf("read VmHWM: %v", err)
	}
	report, err := json.Marshal(answersResult{Outcomes: outcomes, HWMBytes: hwm})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ANSWERS %s\n", report)
}

// selfHWM is this process's resident high-water mark.
func selfHWM() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmHWM %q: %w", rest, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

func TestAnswerLongerThanTheBound(t *testing.T) {
	t.Parallel()
	const limit = 20 << 10
	// answerOf is a valid add answer for the requested site of exactly n
	// bytes, sent with or without a Content-Length.
	answerOf := func(n int, withLength bool) answer {
		return func(w http.ResponseWriter, ids []string) {
			head := `{"value":[{"id":"` + ids[0] + `","name":"`
			body := head + strings.Repeat("x", n-len(head)-len(`"}]}`)) + `"}]}`
			w.Header().Set("Content-Type", "application/json")
			if withLength {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			}
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, body) // fails when the client stops reading early
		}
	}
	tests := []struct {
		name       string
		size       int
		withLength bool
		want       want
	}{
		{name: "at the bound, unknown length", size: limit, want: want{outcome: Applied}},
		{name: "at the bound, with length", size: limit, withLength: true, want: want{outcome: Applied}},
		{name: "a byte beyond, unknown length", size: limit + 1,
			want: want{outcome: Unresolved, code: CodeInvalidResponse, status: http.StatusOK, attempts: 2}},
		{name: "a byte beyond, with length", size: limit + 1, withLength: true,
			want: want{outcome: Unresolved, code: CodeInvalidResponse, status: http.StatusOK, attempts: 2}},
		{name: "far beyond, unknown length", size: 4 << 20,
			want: want{outcome: Unresolved, code: CodeInvalidResponse, status: http.StatusOK, attempts: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newScriptedGraph(t, answerOf(tc.size, tc.withLength))
			c := newScriptedClient(t, g, &countingCredential{}, func(cfg *Config) {
				cfg.MaxAttempts = 2
				cfg.MaxResponseBytes = limit
			})
			ids := siteIDs(1, 1)
			checkResults(t, ids, c.Apply(context.Background(), "u1", Add, ids), []want{tc.want})
		})
	}
}
