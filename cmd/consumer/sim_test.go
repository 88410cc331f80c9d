package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/testkit"
)

// runSim starts `consumer sim args` in the test's process and returns a
// function that stops it (cancelling its context) and returns its error.
func runSim(t *testing.T, stdout, stderr io.Writer, args ...string) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dispatch(ctx, append([]string{"sim"}, args...), envFrom(nil), stdout, stderr) }()
	var err error
	stopped := false
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("sim: %v", err)
		}
	})
	return stop
}

// readEnvFile waits for sim's env file and parses its KEY=VALUE lines.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	var data []byte
	testkit.Eventually(t, time.Minute, "sim to write "+path, func() bool {
		var err error
		data, err = os.ReadFile(path)
		return err == nil
	})
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			t.Fatalf("env file line %q: want KEY=VALUE", sc.Text())
		}
		env[k] = v
	}
	return env
}

// simClient is an HTTP client trusting the CA file sim wrote, as curl
// --cacert does.
func simClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatalf("CA file: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("CA file %s holds no certificate", caFile)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// simToken gets a Graph token from sim's token endpoint with the
// credentials in env.
func simToken(t *testing.T, c *http.Client, env map[string]string) string {
	t.Helper()
	resp, err := c.PostForm(env["AZURE_AUTHORITY_HOST"]+env["AZURE_TENANT_ID"]+"/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {env["AZURE_CLIENT_ID"]},
		"client_secret": {env["AZURE_CLIENT_SECRET"]}, "scope": {"https://graph.microsoft.com/.default"},
	})
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	defer closeResp(t, resp)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK || tok.AccessToken == "" {
		t.Fatalf("token: status %d, decode error %v, want 200 with an access token", resp.StatusCode, err)
	}
	return tok.AccessToken
}

// followedSites is GET /v1.0/users/{user}/followedSites as a person sends it.
func followedSites(t *testing.T, c *http.Client, graphURL, token, user string) []string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, graphURL+"/v1.0/users/"+url.PathEscape(user)+"/followedSites", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET followedSites: %v", err)
	}
	defer closeResp(t, resp)
	var body struct {
		Value []struct {
			ID string `json:"id"`
		} `json:"value"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.Value == nil {
		t.Fatalf("GET followedSites: status %d, decode error %v, want 200 with {\"value\":[...]}", resp.StatusCode, err)
	}
	ids := []string{}
	for _, v := range body.Value {
		ids = append(ids, v.ID)
	}
	return ids
}

func closeResp(t *testing.T, resp *http.Response) {
	t.Helper()
	if err := resp.Body.Close(); err != nil {
		t.Errorf("close body: %v", err)
	}
}

// TestSimQuickStart is the README's quick start: sim, run with the
// environment sim wrote, send, and the followed sites read back from sim.
func TestSimQuickStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	envFile := filepath.Join(dir, "sim.env")
	var stdout, stderr testkit.SyncBuffer
	stop := runSim(t, &stdout, &stderr, "--env-file", envFile, "--latency", "1ms")
	env := readEnvFile(t, envFile)
	if got, want := strings.Join(slices.Sorted(maps.Keys(env)), " "), strings.Join(slices.Sorted(slices.Values(simEnvKeys())), " "); got != want {
		t.Fatalf("env file keys: got %s, want %s", got, want)
	}
	if stdout.String() != "" {
		t.Errorf("stdout with --env-file: got %q, want nothing", stdout.String())
	}

	ns := testkit.StartNATS(t, testkit.NATSOptions{})
	settings := map[string]string{"NATS_URL": ns.URL(), "SITEFOLLOW_HTTP_ADDR": "127.0.0.1:0", "SITEFOLLOW_BATCH_LINGER": "10ms"}
	maps.Copy(settings, env)
	serveInProcess(t, settings, true)

	user := "adele@contoso.com"
	sites := []string{testkit.Site(2), testkit.Site(1)}
	if _, err := send(t, ns.URL(), "--user", user, "--follow", sites[0], sites[1]); err != nil {
		t.Fatalf("send: %v", err)
	}
	c := simClient(t, env["SITEFOLLOW_CA_FILE"])
	token := simToken(t, c, env)
	var got []string
	testkit.Eventually(t, time.Minute, "the follow to reach the simulator", func() bool {
		got = followedSites(t, c, env["SITEFOLLOW_GRAPH_URL"], token, user)
		return len(got) == 2
	})
	if want := slices.Sorted(slices.Values(sites)); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("followed sites: got %q, want %q", got, want)
	}

	if err := stop(); err != nil {
		t.Fatalf("sim after Ctrl-C: got %v, want a clean exit", err)
	}
	if _, err := os.Stat(env["SITEFOLLOW_CA_FILE"]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary CA file after exit: got %v, want it removed", err)
	}
}

func TestSimPrintsExports(t *testing.T) {
	t.Parallel()
	var stdout, stderr testkit.SyncBuffer
	caFile := filepath.Join(t.TempDir(), "sim ca.pem")
	stop := runSim(t, &stdout, &stderr, "--ca-file", caFile, "--budget", "50/s", "--throttle-rate", "0.1", "--error-rate", "0.05",
		"--site-failure-rate", "0.01", "--seed", "7")
	testkit.Eventually(t, time.Minute, "sim to print its environment", func() bool {
		return strings.Count(stdout.String(), "\n") == len(simEnvKeys())
	})
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	for i, k := range simEnvKeys() {
		if !strings.HasPrefix(lines[i], "export "+k+"=") {
			t.Errorf("line %d: got %q, want export %s=…", i, lines[i], k)
		}
	}
	if want := fmt.Sprintf("export SITEFOLLOW_CA_FILE='%s'", caFile); lines[len(lines)-1] != want {
		t.Errorf("CA line: got %q, want %q (quoted for the shell)", lines[len(lines)-1], want)
	}
	if !strings.Contains(stderr.String(), "--seed 7") {
		t.Errorf("stderr: got %q, want it to name the fault seed", stderr.String())
	}
	if err := stop(); err != nil {
		t.Fatalf("sim: %v", err)
	}
	if _, err := os.Stat(caFile); err != nil {
		t.Errorf("CA file given with --ca-file after exit: %v, want it kept", err)
	}
}

func TestSimRefusesBadFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "budget without period", args: []string{"--budget", "50"}, want: "--budget"},
		{name: "budget zero", args: []string{"--budget", "0/s"}, want: "--budget"},
		{name: "budget bad period", args: []string{"--budget", "5/fortnight"}, want: "--budget"},
		{name: "probability above one", args: []string{"--throttle-rate", "1.5"}, want: "--throttle-rate"},
		{name: "negative probability", args: []string{"--site-failure-rate", "-0.1"}, want: "--site-failure-rate"},
		{name: "bad retry-after", args: []string{"--retry-after", "soon"}, want: "--retry-after"},
		{name: "not loopback", args: []string{"--addr", "0.0.0.0:0"}, want: "loopback"},
		{name: "bad site", args: []string{"--site", "nope"}, want: "Sites"},
		{name: "stray argument", args: []string{"now"}, want: "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut testkit.SyncBuffer
			err := dispatch(t.Context(), append([]string{"sim"}, tt.args...), envFrom(nil), &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("sim %q: got error %v, want one containing %q", tt.args, err, tt.want)
			}
			if out.String() != "" {
				t.Errorf("stdout: got %q, want nothing", out.String())
			}
		})
	}
}

func TestParseBudget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want float64
	}{
		{"50/s", 50}, {"50/1s", 50}, {"600/1m", 10}, {"600/m", 10}, {"5/500ms", 10}, {"0.5/s", 0.5},
	}
	for _, tt := range tests {
		got, err := parseBudget(tt.in)
		if err != nil || math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("parseBudget(%q): got %v, %v, want %v", tt.in, got, err, tt.want)
		}
	}
}

// TestSimFlagsShapeGraph checks that each of sim's Graph flags reaches the
// simulator: a follow sent by hand is answered as the flag says.
func TestSimFlagsShapeGraph(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		site       string
		calls      int // the answer judged is the last of these
		wantStatus int
		wantHeader map[string]string
		wantBody   string
	}{
		{name: "plain", site: testkit.Site(1), calls: 1, wantStatus: http.StatusOK},
		{name: "every call throttled", args: []string{"--throttle-rate", "1", "--retry-after", "3"}, site: testkit.Site(1), calls: 1,
			wantStatus: http.StatusTooManyRequests, wantHeader: map[string]string{"Retry-After": "3"}},
		{name: "every call unavailable", args: []string{"--error-rate", "1"}, site: testkit.Site(1), calls: 1,
			wantStatus: http.StatusServiceUnavailable},
		{name: "budget spent", args: []string{"--budget", "1/1m", "--burst", "1"}, site: testkit.Site(1), calls: 2,
			wantStatus: http.StatusTooManyRequests},
		{name: "only the named sites exist", args: []string{"--site", testkit.Site(1)}, site: testkit.Site(2), calls: 1,
			wantStatus: http.StatusMultiStatus, wantBody: "invalidRequest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			envFile := filepath.Join(t.TempDir(), "sim.env")
			var stdout, stderr testkit.SyncBuffer
			stop := runSim(t, &stdout, &stderr, append([]string{"--env-file", envFile}, tt.args...)...)
			env := readEnvFile(t, envFile)
			c := simClient(t, env["SITEFOLLOW_CA_FILE"])
			token := simToken(t, c, env)
			var status int
			var header http.Header
			var body string
			for range tt.calls {
				status, header, body = followByHand(t, c, env["SITEFOLLOW_GRAPH_URL"], token, "adele@contoso.com", tt.site)
			}
			if status != tt.wantStatus {
				t.Errorf("status: got %d, want %d (body %s)", status, tt.wantStatus, body)
			}
			for k, v := range tt.wantHeader {
				if got := header.Get(k); got != v {
					t.Errorf("%s: got %q, want %q", k, got, v)
				}
			}
			if !strings.Contains(body, tt.wantBody) {
				t.Errorf("body: got %s, want it to contain %q", body, tt.wantBody)
			}
			if err := stop(); err != nil {
				t.Fatalf("sim: %v", err)
			}
		})
	}
}

// followByHand is POST /v1.0/users/{user}/followedSites/add for one site.
func followByHand(t *testing.T, c *http.Client, graphURL, token, user, site string) (int, http.Header, string) {
	t.Helper()
	body := fmt.Sprintf(`{"value":[{"id":%q}]}`, site)
	req, err := http.NewRequest(http.MethodPost, graphURL+"/v1.0/users/"+url.PathEscape(user)+"/followedSites/add", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST add: %v", err)
	}
	defer closeResp(t, resp)
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return resp.StatusCode, resp.Header, string(b)
}
