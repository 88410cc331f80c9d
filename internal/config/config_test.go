package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// required is the environment every successful Load needs.
func required() map[string]string {
	return map[string]string{
		"AZURE_TENANT_ID":     "contoso.onmicrosoft.com",
		"AZURE_CLIENT_ID":     "00000000-0000-0000-0000-000000000001",
		"AZURE_CLIENT_SECRET": "s3cr3t-VALUE",
	}
}

// getenv returns a lookup over required() overlaid with extra.
func getenv(extra map[string]string) func(string) string {
	m := required()
	for k, v := range extra {
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

func load(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	var out bytes.Buffer
	return Load(args, getenv(env), &out)
}

func defaults() Config {
	return Config{
		NATSURL:               "nats://127.0.0.1:4222",
		NATSURLDefaulted:      true,
		Stream:                "SITEFOLLOW",
		StreamSubjects:        "sitefollow.requests.>",
		Consumer:              "sitefollow",
		DLQStream:             "SITEFOLLOW_DLQ",
		DLQSubjectPrefix:      "sitefollow.dlq",
		DLQDuplicateWindow:    time.Hour,
		Provision:             true,
		StreamReplicas:        1,
		StateBucket:           "SITEFOLLOW_STATE",
		LeaseTTL:              time.Minute,
		Cloud:                 "global",
		GraphURL:              "https://graph.microsoft.com",
		GraphAPI:              "v1",
		GraphJSONBatch:        true,
		GraphOrg:              "sitefollow",
		GraphMaxAttempts:      5,
		GraphTimeout:          30 * time.Second,
		GraphMaxRetryAfter:    5 * time.Minute,
		GraphCallCost:         2,
		BudgetSubject:         "sitefollow.budget",
		SiteURLCacheTTL:       time.Hour,
		SiteURLCacheSize:      10000,
		TenantID:              "contoso.onmicrosoft.com",
		ClientID:              "00000000-0000-0000-0000-000000000001",
		ClientSecret:          "s3cr3t-VALUE",
		Credential:            "auto",
		AuthorityHost:         "https://login.microsoftonline.com/",
		HTTPAddr:              ":8080",
		BatchMaxSites:         20,
		BatchLinger:           time.Second,
		BatchQuiet:            100 * time.Millisecond,
		EventMaxSites:         100,
		EventMaxBytes:         65536,
		AckWait:               60 * time.Second,
		MaxDeliver:            10,
		MaxAckPending:         200000,
		HeldMemoryMiB:         40,
		StreamDuplicateWindow: 2 * time.Minute,
		MemoryLimitMiB:        72,
		HeldHorizon:           10 * time.Minute,
		MaxConcurrency:        64,
		NakBaseDelay:          5 * time.Second,
		NakMaxDelay:           5 * time.Minute,
		NewUserWindow:         24 * time.Hour,
		ShutdownTimeout:       25 * time.Second,
		LogLevel:              "info",
		LogFormat:             "json",
		PprofAddr:             "127.0.0.1:6060",
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(c *Config)
	}{
		{name: "defaults", want: func(*Config) {}},
		{
			name: "env fallback",
			env: map[string]string{
				"NATS_URL":                   "nats://a:4222, tls://b:4222",
				"SITEFOLLOW_BATCH_LINGER":    "250ms",
				"SITEFOLLOW_BATCH_MAX_SITES": "50",
				"SITEFOLLOW_PROVISION":       "0",
				"SITEFOLLOW_PPROF":           "TRUE",
				"SITEFOLLOW_LOG_FORMAT":      "console",
			},
			want: func(c *Config) {
				c.NATSURL = "nats://a:4222, tls://b:4222"
				c.NATSURLDefaulted = false
				c.BatchLinger = 250 * time.Millisecond
				c.BatchMaxSites = 50
				c.Provision = false
				c.Pprof = true
				c.LogFormat = "console"
			},
		},
		{
			name: "flag beats env",
			args: []string{"--batch-linger", "2s", "--tenant-id=fabrikam.com", "-max-deliver", "3"},
			env:  map[string]string{"SITEFOLLOW_BATCH_LINGER": "250ms", "SITEFOLLOW_MAX_DELIVER": "7"},
			want: func(c *Config) {
				c.BatchLinger = 2 * time.Second
				c.TenantID = "fabrikam.com"
				c.MaxDeliver = 3
			},
		},
		{
			name: "flag beats an invalid env value",
			args: []string{"--ack-wait=90s"},
			env:  map[string]string{"SITEFOLLOW_ACK_WAIT": "soon"},
			want: func(c *Config) { c.AckWait = 90 * time.Second },
		},
		{
			name: "empty env counts as unset",
			env:  map[string]string{"SITEFOLLOW_STREAM": "", "SITEFOLLOW_PROVISION": ""},
			want: func(*Config) {},
		},
		{
			name: "bare bool flags",
			args: []string{"--pprof", "--provision=false"},
			env:  map[string]string{"SITEFOLLOW_PROVISION": "true"},
			want: func(c *Config) {
				c.Pprof = true
				c.Provision = false
			},
		},
		{
			name: "urls normalised",
			args: []string{"--graph-url=http://127.0.0.1:9000/", "--authority-host=https://login.example.test"},
			want: func(c *Config) {
				c.GraphURL = "http://127.0.0.1:9000"
				c.AuthorityHost = "https://login.example.test/"
			},
		},
		{
			name: "related settings raised together",
			args: []string{"--batch-max-sites=1000", "--max-ack-pending=4000", "--batch-linger=1m", "--ack-wait=3m"},
			want: func(c *Config) {
				c.BatchMaxSites = 1000
				c.MaxAckPending = 4000
				c.BatchLinger = time.Minute
				c.AckWait = 3 * time.Minute
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := load(t, tt.args, tt.env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := defaults()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load:\n got %#v\nwant %#v", fieldsOf(got), fieldsOf(want))
			}
		})
	}
}

// fieldsOf shows every field, secret included, since Config's own
// formatting deliberately hides it.
func fieldsOf(c Config) string {
	v := reflect.ValueOf(c)
	var b strings.Builder
	for i := range v.NumField() {
		fmt.Fprintf(&b, "%s=%v ", v.Type().Field(i).Name, v.Field(i))
	}
	return b.String()
}

// invalid holds a bad value for every setting, keyed by flag (or by
// environment variable when there is no flag).
func invalid() map[string]string {
	return map[string]string{
		"nats-url":                "http://127.0.0.1:4222",
		"context":                 "../elsewhere",
		"nats-user":               "alice",   // without a password
		"nats-password":           "hunter2", // without a user
		"nats-token":              "tok\x01en",
		"nats-creds":              "/nonexistent/user.creds",
		"nats-nkey":               "/nonexistent/user.nk",
		"nats-ca":                 "/nonexistent/ca.pem",
		"nats-cert":               "/nonexistent/cert.pem",
		"nats-key":                "/nonexistent/key.pem",
		"stream":                  "SITE.FOLLOW",
		"stream-subjects":         "sitefollow.>.requests",
		"consumer":                "site follow",
		"dlq-stream":              "DLQ*",
		"dlq-subject-prefix":      "sitefollow.*",
		"dlq-duplicate-window":    "-1h",
		"stream-duplicate-window": "0s",
		"provision":               "yes",
		"stream-replicas":         "6",
		"state-bucket":            "state.bucket",
		"lease-ttl":               "1s",
		"graph-url":               "http://graph.example.com",
		"graph-api":               "beta",
		"graph-json-batch":        "sometimes",
		"graph-org":               "a|b",
		"graph-max-attempts":      "21",
		"graph-timeout":           "0s",
		"graph-max-retry-after":   "forever",
		"graph-max-rps":           "-1",
		"graph-budget":            "1250 per minute",
		"site-url-cache-ttl":      "500ms",
		"site-url-cache-size":     "0",
		"graph-call-cost":         "0",
		"budget-subject":          "sitefollow.budget.>",
		"tenant-id":               "contoso/../x",
		"client-id":               "two words",
		"cloud":                   "azure",
		"credential":              "password",
		// A trailing newline is what a secret mounted from a file often carries.
		"AZURE_CLIENT_SECRET":                 "s3cr3t\n",
		"AZURE_CLIENT_CERTIFICATE_PATH":       "/nonexistent/app.pem",
		"AZURE_CLIENT_CERTIFICATE_PASSWORD":   "pass\x00word",
		"AZURE_CLIENT_SEND_CERTIFICATE_CHAIN": "sometimes",
		"AZURE_FEDERATED_TOKEN_FILE":          "/nonexistent/token",
		"authority-host":                      "http://login.example.test/",
		"ca-file":                             "/nonexistent/ca.pem",
		"http-addr":                           "8080",
		"batch-max-sites":                     "0",
		"batch-linger":                        "0s",
		"batch-quiet":                         "-1s",
		"event-max-sites":                     "10001",
		"event-max-bytes":                     "512",
		"ack-wait":                            "4s",
		"max-deliver":                         "1",
		"max-ack-pending":                     "many",
		"held-memory-mib":                     "0",
		"memory-limit-mib":                    "-1",
		"held-horizon":                        "1ms",
		"max-concurrency":                     "1025",
		"nak-delay":                           "0",
		"nak-max-delay":                       "25h",
		"new-user-window":                     "-1h",
		"shutdown-timeout":                    "1",
		"log-level":                           "verbose",
		"log-format":                          "text",
		"pprof":                               "2",
		"pprof-addr":                          "6060",
	}
}

func TestLoadNamesInvalidSetting(t *testing.T) {
	bad := invalid()
	for _, s := range Settings() {
		key := s.Flag
		if key == "" {
			key = s.Env
		}
		value, ok := bad[key]
		if !ok {
			t.Errorf("no invalid value for %s; add one to invalid()", key)
			continue
		}
		t.Run(s.Env, func(t *testing.T) {
			// An empty variable counts as unset, which a required setting refuses.
			_, err := load(t, nil, map[string]string{s.Env: value})
			assertNames(t, err, s.Env)
		})
		if s.Flag == "" {
			continue
		}
		t.Run("--"+s.Flag, func(t *testing.T) {
			_, err := load(t, []string{"--" + s.Flag + "=" + value}, nil)
			assertNames(t, err, "--"+s.Flag)
		})
	}
}

func assertNames(t *testing.T, err error, name string) {
	t.Helper()
	var se *SettingError
	if !errors.As(err, &se) {
		t.Fatalf("Load error = %v, want a *SettingError", err)
	}
	if se.Setting != name {
		t.Errorf("error names %q, want %q (error: %v)", se.Setting, name, err)
	}
	if !strings.HasPrefix(err.Error(), "invalid "+name+" ") {
		t.Errorf("error = %q, want prefix %q", err, "invalid "+name+" ")
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error = %q, want one line", err)
	}
}

func TestLoadErrorMessages(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{
			name: "bad duration from env",
			env:  map[string]string{"SITEFOLLOW_BATCH_LINGER": "abc"},
			want: `invalid SITEFOLLOW_BATCH_LINGER "abc": time: invalid duration "abc"`,
		},
		{
			name: "int out of range from flag",
			args: []string{"--batch-max-sites", "0"},
			want: `invalid --batch-max-sites 0: must be between 1 and 1000`,
		},
		{
			name: "ack wait too close to linger",
			args: []string{"--batch-linger=30s"},
			want: `invalid --ack-wait 1m0s: must be at least 3 × --batch-linger (30s) so batches are sent long before redelivery`,
		},
		{
			name: "lease shorter than a Graph call",
			env:  map[string]string{"SITEFOLLOW_LEASE_TTL": "30s"},
			want: `invalid SITEFOLLOW_LEASE_TTL 30s: must be at least --graph-timeout (30s) + 10s: a lease must outlive every Graph call made under it`,
		},
		{
			name: "max ack pending below four batches",
			env:  map[string]string{"SITEFOLLOW_MAX_ACK_PENDING": "79"},
			want: `invalid SITEFOLLOW_MAX_ACK_PENDING 79: must be at least 4 × --batch-max-sites (80): with fewer requests in flight batches never fill and are only sent when --batch-linger expires`,
		},
		{
			name: "nak max below base",
			args: []string{"--nak-max-delay=1s"},
			want: `invalid --nak-max-delay 1s: must not be less than --nak-delay (5s)`,
		},
		{
			name: "negative new-user window",
			args: []string{"--new-user-window=-1h"},
			want: `invalid --new-user-window -1h0m0s: must be between 0s and 720h0m0s`,
		},
		{
			name: "new-user window not a duration",
			env:  map[string]string{"SITEFOLLOW_NEW_USER_WINDOW": "a day"},
			want: `invalid SITEFOLLOW_NEW_USER_WINDOW "a day": time: invalid duration "a day"`,
		},
		{
			name: "dlq stream same as stream",
			env:  map[string]string{"SITEFOLLOW_DLQ_STREAM": "SITEFOLLOW"},
			want: `invalid SITEFOLLOW_DLQ_STREAM "SITEFOLLOW": must differ from --stream`,
		},
		{
			name: "dlq subjects overlap requests",
			args: []string{"--stream-subjects=sitefollow.>"},
			want: "2 settings are missing or invalid:\n" +
				`  invalid --dlq-subject-prefix "sitefollow.dlq": dead-letter subjects sitefollow.dlq.> overlap --stream-subjects "sitefollow.>"` + "\n" +
				`  invalid --budget-subject "sitefollow.budget": budget subjects sitefollow.budget.> overlap --stream-subjects "sitefollow.>"`,
		},
		{
			name: "every missing and invalid setting at once",
			env:  map[string]string{"AZURE_TENANT_ID": "", "AZURE_CLIENT_ID": "", "SITEFOLLOW_BATCH_LINGER": "soon"},
			want: "3 settings are missing or invalid:\n" +
				`  invalid SITEFOLLOW_BATCH_LINGER "soon": time: invalid duration "soon"` + "\n" +
				`  invalid --tenant-id "": is required unless --credential is managed; set --tenant-id or AZURE_TENANT_ID` + "\n" +
				`  invalid --client-id "": is required unless --credential is managed; set --client-id or AZURE_CLIENT_ID`,
		},
		{
			name: "missing tenant",
			env:  map[string]string{"AZURE_TENANT_ID": ""},
			want: `invalid --tenant-id "": is required unless --credential is managed; set --tenant-id or AZURE_TENANT_ID`,
		},
		{
			name: "nats url password not echoed",
			env:  map[string]string{"NATS_URL": "nats://user:hunter2@127.0.0.1:4222,http://x"},
			want: `invalid NATS_URL "nats://redacted@127.0.0.1:4222,http://x": must be nats://, tls://, ws:// or wss:// URLs with a host, separated by commas`,
		},
		{
			name: "graph url password not echoed",
			env:  map[string]string{"SITEFOLLOW_GRAPH_URL": "https://alice:hunter2@graph.microsoft.com"},
			want: `invalid SITEFOLLOW_GRAPH_URL "https://redacted@graph.microsoft.com": must not contain credentials`,
		},
		{
			name: "graph url token not echoed",
			args: []string{"--graph-url=https://tok3n@graph.microsoft.com/v1.0"},
			want: `invalid --graph-url "https://redacted@graph.microsoft.com/v1.0": must not contain credentials`,
		},
		{
			name: "unparsable graph url with credentials not echoed",
			env:  map[string]string{"SITEFOLLOW_GRAPH_URL": "https://alice:hunter2@graph.microsoft.com:port"},
			want: `invalid SITEFOLLOW_GRAPH_URL "[unparsable URL]": must be an absolute URL such as https://graph.microsoft.com`,
		},
		{
			name: "authority password not echoed",
			env:  map[string]string{"AZURE_AUTHORITY_HOST": "https://alice:hunter2@login.microsoftonline.com/"},
			want: `invalid AZURE_AUTHORITY_HOST "https://redacted@login.microsoftonline.com/": must have no credentials, query or fragment`,
		},
		{
			name: "unknown flag",
			args: []string{"--no-such-flag"},
			want: `parse flags: flag provided but not defined: -no-such-flag`,
		},
		{
			name: "secret is not a flag",
			args: []string{"--client-secret=x"},
			want: `parse flags: flag provided but not defined: -client-secret`,
		},
		{
			name: "positional argument",
			args: []string{"--pprof", "extra"},
			want: `parse flags: unexpected argument "extra"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.args, tt.env)
			if err == nil {
				t.Fatalf("Load succeeded, want error %q", tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("Load error:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestGraphURL(t *testing.T) {
	tests := []struct {
		url  string
		want string // "" for accepted, else a substring of the error
	}{
		{"https://graph.microsoft.com", ""},
		{"https://graph.microsoft.com/", ""},
		{"https://graph.example.test:8443", ""},
		{"http://127.0.0.1:8080", ""},
		{"http://127.9.9.9", ""},
		{"http://[::1]:8080/", ""},
		{"http://localhost:8080", ""},
		{"http://graph.microsoft.com", "loopback"},
		{"http://10.0.0.1:8080", "loopback"},
		{"http://localhost.example.com", "loopback"},
		{"ftp://127.0.0.1", "must use https"},
		{"https://graph.microsoft.com/v1.0", "no path"},
		{"https://graph.microsoft.com/?a=b", "no path"},
		{"https://graph.microsoft.com#x", "no path"},
		{"https://u:p@graph.microsoft.com", "credentials"},
		{"graph.microsoft.com", "absolute URL"},
		{"", "absolute URL"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := load(t, []string{"--graph-url=" + tt.url}, nil)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Load(--graph-url=%s) = %v, want success", tt.url, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Load(--graph-url=%s) = %v, want error containing %q", tt.url, err, tt.want)
			}
		})
	}
}

func TestValidateHandBuilt(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"trailing slash on graph url", func(c *Config) { c.GraphURL += "/" }, ""},
		{"zero linger", func(c *Config) { c.BatchLinger = 0 }, "invalid --batch-linger 0s:"},
		{"missing secret", func(c *Config) { c.ClientSecret = ""; c.Credential = CredentialSecret }, `invalid AZURE_CLIENT_SECRET "": is required with --credential secret`},
		{"no secret falls back to managed identity", func(c *Config) { c.ClientSecret = "" }, ""},
		{"system-assigned managed identity needs no tenant or client id", func(c *Config) {
			c.ClientSecret, c.TenantID, c.ClientID = "", "", ""
		}, ""},
		{"forced managed identity needs no tenant", func(c *Config) { c.Credential, c.TenantID = CredentialManaged, "" }, ""},
		{"a secret needs the tenant", func(c *Config) { c.TenantID = "" }, `invalid --tenant-id "": is required unless --credential is managed`},
		{"a secret needs the client id", func(c *Config) { c.ClientID = "" }, `invalid --client-id "": is required unless --credential is managed`},
		{"empty http addr", func(c *Config) { c.HTTPAddr = "" }, `invalid --http-addr "": must be host:port`},
		{"org with newline", func(c *Config) { c.GraphOrg = "a\nb" }, `invalid --graph-org "a\nb": must not contain control characters`},
		{"budget subject captured by the request stream", func(c *Config) { c.BudgetSubject = "sitefollow.requests.budget" }, `invalid --budget-subject`},
		{"budget subject captured by the dead-letter stream", func(c *Config) { c.BudgetSubject = "sitefollow.dlq" }, `invalid --budget-subject`},
		{"budget without a window", func(c *Config) { c.GraphBudget = Budget{Units: 10} }, `invalid --graph-budget`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaults()
			tt.modify(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want prefix %q", err, tt.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		t.Run(arg, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Load([]string{arg}, getenv(nil), &out)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("Load(%s) error = %v, want flag.ErrHelp", arg, err)
			}
			var want bytes.Buffer
			Usage(&want)
			if got := out.String(); got != want.String() {
				t.Errorf("Load(%s) wrote:\n%s\nwant Usage:\n%s", arg, got, want.String())
			}
		})
	}
}

func TestUsageListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	Usage(&out)
	help := out.String()
	for _, s := range Settings() {
		wants := []string{s.Env, s.Description}
		if s.Flag != "" {
			wants = append(wants, "--"+s.Flag)
		}
		if s.Default != "" {
			wants = append(wants, "default "+s.Default)
		}
		for _, w := range wants {
			if !strings.Contains(help, w) {
				t.Errorf("usage lacks %q for %s", w, s.Env)
			}
		}
	}
}

func TestUsageGolden(t *testing.T) {
	var out bytes.Buffer
	Usage(&out)
	golden := filepath.Join("testdata", "usage.golden")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatalf("update golden: %v", err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if got := out.String(); got != string(want) {
		t.Errorf("Usage output differs from %s (run go test -update if intended):\n got:\n%s\nwant:\n%s", golden, got, want)
	}
}

func TestSettingsTable(t *testing.T) {
	flags, envs := map[string]bool{}, map[string]bool{}
	for _, s := range Settings() {
		if s.Env == "" || s.Description == "" || s.Type == "" {
			t.Errorf("setting %+v lacks an env var, type or description", s)
		}
		if (s.Flag != "" && flags[s.Flag]) || envs[s.Env] {
			t.Errorf("setting %s/%s declared twice", s.Flag, s.Env)
		}
		flags[s.Flag], envs[s.Env] = true, true
	}
	// Fields derived from settings rather than set by one.
	derived := []string{"NATSURLDefaulted", "NATSConfigDir"}
	if got, want := len(Settings()), reflect.TypeFor[Config]().NumField()-len(derived); got != want {
		t.Errorf("Settings() has %d entries, Config has %d fields", got, want)
	}
}

func TestSecretNeverShown(t *testing.T) {
	const secret = "s3cr3t-VALUE"
	c, err := load(t, nil, map[string]string{"NATS_URL": "nats://alice:hunter2@127.0.0.1:4222,nats://tok3n@127.0.0.2:4222",
		"NATS_USER": "alice", "NATS_PASSWORD": "pa55-VALUE"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	var logged bytes.Buffer
	log := zerolog.New(&logged)
	log.Info().Object("config", c).Msg("starting")
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	shown := map[string]string{
		"log":    logged.String(),
		"%v":     fmt.Sprintf("%v", c),
		"%+v":    fmt.Sprintf("%+v", c),
		"%#v":    fmt.Sprintf("%#v", c),
		"%s":     fmt.Sprintf("%s", c),
		"%v ptr": fmt.Sprintf("%v", &c),
		"json":   string(js),
	}
	for how, text := range shown {
		for _, leak := range []string{secret, "hunter2", "tok3n", "pa55-VALUE"} {
			if strings.Contains(text, leak) {
				t.Errorf("%s shows %q: %s", how, leak, text)
			}
		}
	}
	var line struct {
		Config map[string]string `json:"config"`
	}
	if err := json.Unmarshal(logged.Bytes(), &line); err != nil {
		t.Fatalf("log line is not JSON: %v: %s", err, logged.String())
	}
	got := line.Config
	for k, want := range map[string]string{
		"azure-client-secret": "[redacted]",
		"nats-password":       "[redacted]",
		"nats-url":            "nats://redacted@127.0.0.1:4222,nats://redacted@127.0.0.2:4222",
		"batch-linger":        "1s",
		"tenant-id":           "contoso.onmicrosoft.com",
	} {
		if got[k] != want {
			t.Errorf("logged %s = %q, want %q", k, got[k], want)
		}
	}
	if len(got) != len(Settings()) {
		t.Errorf("logged %d settings, want %d", len(got), len(Settings()))
	}
}

func TestNewLogger(t *testing.T) {
	tests := []struct {
		level, format string
		wantErr       bool
		check         func(t *testing.T, out string)
	}{
		{level: "info", format: "json", check: func(t *testing.T, out string) {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 1 {
				t.Fatalf("got %d lines, want only the info line: %s", len(lines), out)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
				t.Fatalf("line is not JSON: %v", err)
			}
			if m["message"] != "shown" || m["level"] != "info" || m["time"] == nil {
				t.Errorf("line = %v, want message, level and time", m)
			}
		}},
		{level: "trace", format: "console", check: func(t *testing.T, out string) {
			if !strings.Contains(out, "hidden") || !strings.Contains(out, "shown") || strings.HasPrefix(out, "{") {
				t.Errorf("console output = %q, want both lines as text", out)
			}
		}},
		{level: "fatal", format: "json", wantErr: true},
		{level: "info", format: "xml", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.level+"/"+tt.format, func(t *testing.T) {
			c := defaults()
			c.LogLevel, c.LogFormat = tt.level, tt.format
			var out bytes.Buffer
			log, err := NewLogger(c, &out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewLogger error = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			log.Debug().Msg("hidden")
			log.Info().Msg("shown")
			tt.check(t, out.String())
		})
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := write("ca.pem", selfSignedPEM(t))
	junk := write("junk.pem", "not a certificate")
	creds := write("user.creds", "-----BEGIN NATS USER JWT-----\n")

	tests := []struct {
		name string
		args []string
		want string // "" for success, else error substring
	}{
		{"ca file", []string{"--ca-file=" + ca}, ""},
		{"ca file without certificates", []string{"--ca-file=" + junk}, "contains no PEM certificate"},
		{"missing ca file", []string{"--ca-file=" + filepath.Join(dir, "none.pem")}, "no such file"},
		{"creds file", []string{"--nats-creds=" + creds}, ""},
		{"creds directory", []string{"--nats-creds=" + dir}, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.args, nil)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Load = %v, want success", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Load = %v, want error containing %q", err, tt.want)
			}
		})
	}

	c := defaults()
	pool, err := c.RootCAs()
	if err != nil || pool != nil {
		t.Errorf("RootCAs() without a CA file = %v, %v; want nil, nil", pool, err)
	}
	c.CAFile = ca
	pool, err = c.RootCAs()
	if err != nil || pool == nil {
		t.Fatalf("RootCAs() = %v, %v; want a pool", pool, err)
	}
}

// selfSignedPEM returns a fresh self-signed CA certificate in PEM.
func selfSignedPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestSubjectsOverlap(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"sitefollow.dlq.>", "sitefollow.requests.>", false},
		{"sitefollow.dlq.>", "sitefollow.>", true},
		{"sitefollow.dlq.>", "sitefollow.*", false},
		{"sitefollow.dlq.>", "sitefollow.*.x", true},
		{"sitefollow.dlq.>", "sitefollow.dlq", false},
		{"sitefollow.dlq.>", ">", true},
		{"a.b", "a.b", true},
		{"a.b", "a.b.c", false},
	}
	for _, tt := range tests {
		if got := subjectsOverlap(tt.a, tt.b); got != tt.want {
			t.Errorf("subjectsOverlap(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := subjectsOverlap(tt.b, tt.a); got != tt.want {
			t.Errorf("subjectsOverlap(%q, %q) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
}
