// Package config is the consumer's one source of settings: it reads flags
// with environment fallbacks, validates them once, and is the only package
// that looks at the environment. Every setting is declared in a single table
// (see settings.go) from which parsing, validation, help text and the
// redacted log line are all derived, so they cannot drift apart.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// Config holds every setting of `consumer run`. Build it with Load; a Config
// built by hand should be checked with Validate before use. Each field's
// flag, environment variable, default and meaning are in Settings.
type Config struct {
	NATSURL string
	// NATSURLDefaulted says NATSURL is the default rather than given by
	// flag or environment, so a NATS context's URL replaces it. A Config
	// built by hand leaves it false: its URL counts as given.
	NATSURLDefaulted bool
	NATSContext      string
	NATSUser         string
	// NATSPassword and NATSToken are redacted wherever a Config is shown,
	// as ClientSecret is.
	NATSPassword  string
	NATSToken     string
	NATSCredsFile string
	NATSNKeyFile  string
	NATSCAFile    string
	NATSCertFile  string
	NATSKeyFile   string
	// NATSConfigDir is where the nats CLI keeps its contexts
	// ($XDG_CONFIG_HOME, else $HOME/.config); it is derived from the
	// environment, not a setting of its own, and empty when neither is set.
	NATSConfigDir string

	Stream             string
	StreamSubjects     string
	Consumer           string
	DLQStream          string
	DLQSubjectPrefix   string
	DLQDuplicateWindow time.Duration
	Provision          bool
	StreamReplicas     int
	// StreamDuplicateWindow is the request stream's duplicates window.
	StreamDuplicateWindow time.Duration
	StateBucket           string
	LeaseTTL              time.Duration

	// Cloud is SITEFOLLOW_CLOUD; GraphURL and AuthorityHost default to its
	// hosts, and GraphScope is its scope whatever they are.
	Cloud    string
	GraphURL string
	// GraphAPI is "v1" or "beta-followingsites".
	GraphAPI string
	// GraphJSONBatch is SITEFOLLOW_GRAPH_JSON_BATCH: combine concurrent
	// calls into $batch envelopes (v1 only).
	GraphJSONBatch     bool
	GraphOrg           string
	GraphMaxAttempts   int
	GraphTimeout       time.Duration
	GraphMaxRetryAfter time.Duration
	GraphMaxRPS        float64
	GraphBudget        Budget
	GraphCallCost      float64
	BudgetSubject      string
	// SiteURLCacheTTL and SiteURLCacheSize bound the cache of site ids by
	// site URL (graphclient.Client.ResolveSite).
	SiteURLCacheTTL  time.Duration
	SiteURLCacheSize int

	TenantID string
	ClientID string
	// ClientSecret comes only from AZURE_CLIENT_SECRET, so it never appears
	// in process lists, and it is redacted by String, GoString, MarshalJSON
	// and the zerolog representation.
	ClientSecret string
	// Credential is SITEFOLLOW_CREDENTIAL; CredentialKind resolves auto.
	Credential                string
	ClientCertificatePath     string
	ClientCertificatePassword string // redacted like ClientSecret
	SendCertificateChain      bool
	FederatedTokenFile        string
	AuthorityHost             string
	CAFile                    string

	HTTPAddr string

	BatchMaxSites   int
	BatchLinger     time.Duration
	BatchQuiet      time.Duration
	EventMaxSites   int
	EventMaxBytes   int
	AckWait         time.Duration
	MaxDeliver      int
	MaxAckPending   int
	HeldMemoryMiB   int
	MemoryLimitMiB  int
	HeldHorizon     time.Duration
	MaxConcurrency  int
	NakBaseDelay    time.Duration
	NakMaxDelay     time.Duration
	NewUserWindow   time.Duration
	ShutdownTimeout time.Duration

	LogLevel  string
	LogFormat string
	Pprof     bool
	PprofAddr string
}

// SettingError reports a setting whose value is malformed or out of range.
// Setting is the flag (with its dashes) when the value came from a flag, and
// the environment variable when it came from the environment.
type SettingError struct {
	Setting string
	Value   string // as shown to people: quoted for text, redacted for secrets
	Err     error
}

// Error renders the one-line form, e.g.
// `invalid --batch-max-sites 0: must be between 1 and 1000`.
func (e *SettingError) Error() string {
	return fmt.Sprintf("invalid %s %s: %v", e.Setting, e.Value, e.Err)
}

// Unwrap returns the underlying parse or range error.
func (e *SettingError) Unwrap() error { return e.Err }

// Load builds a Config from args (flags only, such as os.Args[2:] after the
// `run` subcommand) with getenv as the fallback for each setting and the
// table's default after that: flag > environment > default. An empty
// environment variable counts as unset. The result is validated; errors name
// the setting the way the user gave it. -h or --help writes Usage to
// usageOut and returns flag.ErrHelp.
func Load(args []string, getenv func(string) string, usageOut io.Writer) (Config, error) {
	fs := flag.NewFlagSet("consumer run", flag.ContinueOnError)
	// The flag package's own messages and usage are replaced by ours.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	all := bindFlags(fs, func(*spec) bool { return true })
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			if usageOut != nil {
				Usage(usageOut)
			}
			return Config{}, flag.ErrHelp
		}
		return Config{}, fmt.Errorf("parse flags: %w", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("parse flags: unexpected argument %q", fs.Arg(0))
	}
	c, err := all.resolve(getenv)
	if err != nil {
		return Config{}, err
	}
	return c, nil
}

// SettingErrors is several settings that are missing or invalid, reported
// together so that one run names everything to fix.
type SettingErrors []error

func (e SettingErrors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d settings are missing or invalid:", len(e))
	for _, err := range e {
		b.WriteString("\n  ")
		b.WriteString(err.Error())
	}
	return b.String()
}

// Unwrap returns each setting's error (a *SettingError).
func (e SettingErrors) Unwrap() []error { return e }

// joinSettingErrors is nil for none, the error itself for one, and
// SettingErrors for more.
func joinSettingErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return SettingErrors(errs)
}

// lookup finds a setting's text: from its flag, else its environment
// variable, else its default. name is how errors refer to it and given
// says whether it came from a flag or the environment.
func (s *spec) lookup(fromFlag map[string]string, getenv func(string) string) (raw, name string, given bool) {
	if v, ok := fromFlag[s.Flag]; ok && s.Flag != "" {
		return v, s.name(), true
	}
	if v := getenv(s.Env); v != "" {
		return v, s.Env, true
	}
	return s.Default, s.name(), false
}

// Validate checks every setting and the relations between them. Its errors
// name the flag, or the environment variable for environment-only settings.
func (c Config) Validate() error {
	return joinSettingErrors(c.problems(table(), (*spec).name))
}

// problems checks each of specs, then the relations between them: a
// relation is judged only when its setting and every one it names are
// among specs and passed their own checks (a tool binds only some
// settings; a value already refused says nothing about another).
func (c Config) problems(specs []spec, name func(*spec) string) []error {
	byKey := make(map[string]*spec, len(specs))
	var errs []error
	for i := range specs {
		s := &specs[i]
		if err := s.check(&c); err != nil {
			errs = append(errs, &SettingError{Setting: name(s), Value: s.shown(&c), Err: err})
			continue
		}
		byKey[s.key()] = s
	}
	var unknown bool
	nameOf := func(key string) string {
		if s, ok := byKey[key]; ok {
			return name(s)
		}
		unknown = true
		return key
	}
	for _, x := range relations() {
		s, ok := byKey[x.key]
		if !ok {
			continue
		}
		unknown = false
		if err := x.check(&c, nameOf); err != nil && !unknown {
			errs = append(errs, &SettingError{Setting: name(s), Value: s.shown(&c), Err: err})
		}
	}
	return errs
}

// rawFlag records a flag's text so that Load can apply flag > env > default
// precedence and name the flag in parse errors itself.
type rawFlag struct {
	raw    map[string]string
	name   string
	isBool bool
}

func (f rawFlag) String() string { return "" }

func (f rawFlag) Set(v string) error {
	f.raw[f.name] = v
	return nil
}

// IsBoolFlag lets boolean settings be given as a bare --flag.
func (f rawFlag) IsBoolFlag() bool { return f.isBool }

// String renders the settings on one line with the client secret redacted.
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("config{")
	for i, s := range table() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", s.key(), s.shown(&c))
	}
	b.WriteByte('}')
	return b.String()
}

// GoString keeps %#v from printing the client secret.
func (c Config) GoString() string { return c.String() }
