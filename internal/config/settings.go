package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Setting documents one setting: its flag (without dashes; empty for
// environment-only settings), environment variable, default as text, kind of
// value and one-line meaning. Settings returns them for docs and tests.
type Setting struct {
	Flag        string
	Env         string
	Default     string
	Type        string // string, int, duration or bool
	Required    bool
	Description string
}

// Settings returns the table every other part of this package is derived
// from, in help order.
func Settings() []Setting {
	specs := table()
	out := make([]Setting, len(specs))
	for i, s := range specs {
		out[i] = s.Setting
	}
	return out
}

// spec binds a Setting to its Config field.
type spec struct {
	Setting
	isBool bool
	text   bool // shown quoted, as text values may hold spaces
	secret bool
	set    func(c *Config, raw string) error
	show   func(c *Config) string
	check  func(c *Config) error
	// defaulted, when set, is told that the setting took its default, for
	// settings whose default yields to something else (NATS_URL to a
	// context's URL).
	defaulted func(c *Config)
}

// name is how Validate refers to the setting: its flag, or its environment
// variable when it has no flag.
func (s *spec) name() string {
	if s.Flag == "" {
		return s.Env
	}
	return "--" + s.Flag
}

// key names the setting in log lines and String.
func (s *spec) key() string {
	if s.Flag == "" {
		return strings.ToLower(strings.ReplaceAll(s.Env, "_", "-"))
	}
	return s.Flag
}

// display is the value for log fields: unquoted, secrets redacted.
func (s *spec) display(c *Config) string {
	v := s.show(c)
	if s.secret && v != "" {
		return "[redacted]"
	}
	return v
}

// shown is the value for error messages and String.
func (s *spec) shown(c *Config) string {
	if s.text {
		return strconv.Quote(s.display(c))
	}
	return s.display(c)
}

// quoteRaw shows text that failed to parse.
func (s *spec) quoteRaw(raw string) string {
	if s.secret {
		return "[redacted]"
	}
	return strconv.Quote(raw)
}

// table declares every setting. It is built on each call rather than kept in
// a package variable; it is small and its closures are cheap.
func table() []spec {
	return []spec{
		str("nats-url", "NATS_URL", "nats://127.0.0.1:4222",
			"NATS server URL (nats://, tls://, ws://, wss://); comma-separated for several servers. Given, it wins over the context's; the default applies only when no context is used.",
			func(c *Config) *string { return &c.NATSURL }, checkNATSURLs).redactWith(redactURLs).whenDefaulted(func(c *Config) { c.NATSURLDefaulted = true }),
		str("context", "NATS_CONTEXT", "",
			"nats CLI context to connect with (a name saved by `nats context save`, read from $XDG_CONFIG_HOME/nats/context/NAME.json); empty uses the context the nats CLI has selected, if any. The NATS settings given here win over the context's.",
			func(c *Config) *string { return &c.NATSContext }, checkContextName),
		str("nats-user", "NATS_USER", "",
			"NATS user name; needs --nats-password.",
			func(c *Config) *string { return &c.NATSUser }, checkNoControl),
		str("nats-password", "NATS_PASSWORD", "",
			"NATS password of --nats-user; prefer the environment variable, which stays out of process lists.",
			func(c *Config) *string { return &c.NATSPassword }, checkSecret).hide(),
		str("nats-token", "NATS_TOKEN", "",
			"NATS authentication token, instead of a user; prefer the environment variable, which stays out of process lists.",
			func(c *Config) *string { return &c.NATSToken }, checkNoControl).hide(),
		str("nats-creds", "NATS_CREDS", "",
			"NATS user credentials (.creds) file; empty connects without credentials.",
			func(c *Config) *string { return &c.NATSCredsFile }, checkOptionalFile),
		str("nats-nkey", "NATS_NKEY", "",
			"NATS user nkey seed file.",
			func(c *Config) *string { return &c.NATSNKeyFile }, checkOptionalFile),
		str("nats-ca", "NATS_CA", "",
			"PEM file of the root certificates trusted for the NATS server's TLS certificate (instead of the system roots).",
			func(c *Config) *string { return &c.NATSCAFile }, checkCAFile),
		str("nats-cert", "NATS_CERT", "",
			"PEM client certificate file for NATS TLS; needs --nats-key.",
			func(c *Config) *string { return &c.NATSCertFile }, checkOptionalFile),
		str("nats-key", "NATS_KEY", "",
			"PEM private key file of --nats-cert.",
			func(c *Config) *string { return &c.NATSKeyFile }, checkOptionalFile),
		str("stream", "SITEFOLLOW_STREAM", "SITEFOLLOW",
			"JetStream stream holding follow/unfollow requests.",
			func(c *Config) *string { return &c.Stream }, checkName),
		str("stream-subjects", "SITEFOLLOW_STREAM_SUBJECTS", "sitefollow.requests.>",
			"Subject filter the request stream captures (wildcards allowed).",
			func(c *Config) *string { return &c.StreamSubjects }, checkSubject(true)),
		str("consumer", "SITEFOLLOW_CONSUMER", "sitefollow",
			"Durable consumer name on the request stream.",
			func(c *Config) *string { return &c.Consumer }, checkName),
		str("dlq-stream", "SITEFOLLOW_DLQ_STREAM", "SITEFOLLOW_DLQ",
			"JetStream stream holding dead letters.",
			func(c *Config) *string { return &c.DLQStream }, checkName),
		str("dlq-subject-prefix", "SITEFOLLOW_DLQ_SUBJECT_PREFIX", "sitefollow.dlq",
			"Subject prefix for dead letters; the dead-letter stream captures prefix.>.",
			func(c *Config) *string { return &c.DLQSubjectPrefix }, checkSubject(false)),
		duration("stream-duplicate-window", "SITEFOLLOW_STREAM_DUPLICATE_WINDOW", "2m",
			"Window in which the request stream drops a request published again with the same Nats-Msg-Id (producers' retries, dlq replay run again).",
			func(c *Config) *time.Duration { return &c.StreamDuplicateWindow }, between(time.Second, 7*24*time.Hour)),
		duration("dlq-duplicate-window", "SITEFOLLOW_DLQ_DUPLICATE_WINDOW", "1h",
			"Window in which the dead-letter stream drops a repeated dead letter.",
			func(c *Config) *time.Duration { return &c.DLQDuplicateWindow }, between(time.Second, 7*24*time.Hour)),
		boolean("provision", "SITEFOLLOW_PROVISION", "true",
			"Create or update the streams, consumer and state bucket at start-up; never lowers replicas or changes limits set on existing ones.",
			func(c *Config) *bool { return &c.Provision }),
		integer("stream-replicas", "SITEFOLLOW_STREAM_REPLICAS", "1",
			"Replicas of both streams and the state bucket when provisioning creates them (3 on a three-node cluster); existing ones are raised to it, never lowered.",
			func(c *Config) *int { return &c.StreamReplicas }, 1, 5),
		str("state-bucket", "SITEFOLLOW_STATE_BUCKET", "SITEFOLLOW_STATE",
			"Key-value bucket the replicas share: a lease per user and, per (user, site), the newest request applied.",
			func(c *Config) *string { return &c.StateBucket }, checkBucket),
		duration("lease-ttl", "SITEFOLLOW_LEASE_TTL", "60s",
			"How long a replica's claim on a user outlives the replica: after a crash, that user's requests wait this long for another replica.",
			func(c *Config) *time.Duration { return &c.LeaseTTL }, between(5*time.Second, time.Hour)),

		str("cloud", "SITEFOLLOW_CLOUD", "global",
			"Microsoft cloud: global, usgov (L4, GCC High), usgovdod (L5, DoD) or china (21Vianet); sets the Graph host, the Entra authority and the token scope together.",
			func(c *Config) *string { return &c.Cloud }, oneOf(cloudNames()...)),
		str("graph-url", "SITEFOLLOW_GRAPH_URL", "",
			"Microsoft Graph base URL (https; http only for loopback), without a path; empty for the cloud's (https://graph.microsoft.com for global). Changes the host only: the token scope stays the cloud's.",
			func(c *Config) *string { return &c.GraphURL }, checkGraphURL).normalizeWith(trimSlash).redactWith(redactURLs).
			whenDefaulted(func(c *Config) { c.GraphURL = c.cloudOf().GraphURL }),
		str("graph-api", "SITEFOLLOW_GRAPH_API", "v1",
			"Graph calls to make: v1 (followedSites/add and /remove) or beta-followingsites (the older beta PATCH /beta/users/{id}/followingSites, follows and unfollows in one call; unsupported in production by Microsoft).",
			func(c *Config) *string { return &c.GraphAPI }, oneOf("v1", "beta-followingsites")),
		boolean("graph-json-batch", "SITEFOLLOW_GRAPH_JSON_BATCH", "true",
			"Combine concurrent users' followedSites calls into Graph JSON batches (POST /v1.0/$batch, at most 20 calls each, every call answered, retried and throttled on its own); false sends every call as its own HTTP request. Not used with graph-api beta-followingsites.",
			func(c *Config) *bool { return &c.GraphJSONBatch }),
		str("graph-org", "SITEFOLLOW_GRAPH_ORG", "sitefollow",
			"Organisation in the User-Agent NONISV|<org>|sitefollow/<version> sent to Graph.",
			func(c *Config) *string { return &c.GraphOrg }, checkOrg),
		integer("graph-max-attempts", "SITEFOLLOW_GRAPH_MAX_ATTEMPTS", "5",
			"Attempts per Graph call, including the first, before a transient failure is given up on.",
			func(c *Config) *int { return &c.GraphMaxAttempts }, 1, 20),
		duration("graph-timeout", "SITEFOLLOW_GRAPH_TIMEOUT", "30s",
			"Timeout of each HTTP request to Graph.",
			func(c *Config) *time.Duration { return &c.GraphTimeout }, between(time.Second, 10*time.Minute)),
		duration("graph-max-retry-after", "SITEFOLLOW_GRAPH_MAX_RETRY_AFTER", "5m",
			"Longest Retry-After wait from Graph that is honoured.",
			func(c *Config) *time.Duration { return &c.GraphMaxRetryAfter }, between(time.Second, time.Hour)),
		number("graph-max-rps", "SITEFOLLOW_GRAPH_MAX_RPS", "0",
			"Most Graph calls per second this replica sends, whatever the budget allows, for tenants that keep part of the app's budget for other apps; 0 for no cap.",
			func(c *Config) *float64 { return &c.GraphMaxRPS }, 0, 100000),
		bind(Setting{Flag: "graph-budget", Env: "SITEFOLLOW_GRAPH_BUDGET", Default: "", Type: "units/window",
			Description: "The app's Graph budget if known, in resource units per window (e.g. 1250/1m, SharePoint's smallest per-app minute), shared by all replicas; pacing starts from it instead of probing. Empty to probe."},
			func(c *Config) *Budget { return &c.GraphBudget }, ParseBudget, Budget.String, Budget.check),
		number("graph-call-cost", "SITEFOLLOW_GRAPH_CALL_COST", "2",
			"Resource units one followedSites call costs against the budget (SharePoint charges 2 for a write); it converts the budget and the RateLimit headers into calls.",
			func(c *Config) *float64 { return &c.GraphCallCost }, 0.1, 1000),
		duration("site-url-cache-ttl", "SITEFOLLOW_SITE_URL_CACHE_TTL", "1h",
			"How long the site id a request's siteUrls entry resolved to is remembered (a URL without a site, 404, for a minute at most); a cached URL costs no Graph GET.",
			func(c *Config) *time.Duration { return &c.SiteURLCacheTTL }, between(time.Second, 7*24*time.Hour)),
		integer("site-url-cache-size", "SITEFOLLOW_SITE_URL_CACHE_SIZE", "10000",
			"Most site URLs whose site ids are remembered; the least recently used go first.",
			func(c *Config) *int { return &c.SiteURLCacheSize }, 1, 10000000),
		str("budget-subject", "SITEFOLLOW_BUDGET_SUBJECT", "sitefollow.budget",
			"Core NATS subject prefix on which replicas share the Graph budget (heartbeats and throttle signals); every replica of one app must use the same.",
			func(c *Config) *string { return &c.BudgetSubject }, checkSubject(false)),

		str("tenant-id", "AZURE_TENANT_ID", "",
			"Microsoft Entra tenant ID or domain the app registration belongs to. Required unless the credential is managed identity.",
			func(c *Config) *string { return &c.TenantID }, checkTenant),
		str("client-id", "AZURE_CLIENT_ID", "",
			"Application (client) ID of the app registration; with managed identity, the client ID of a user-assigned identity (empty: the system-assigned one). Required unless the credential is managed identity.",
			func(c *Config) *string { return &c.ClientID }, checkClientID),
		str("credential", "SITEFOLLOW_CREDENTIAL", CredentialAuto,
			"Credential kind: auto (a client secret, else a certificate, else a federated token file, else managed identity), secret, certificate, workload or managed.",
			func(c *Config) *string { return &c.Credential }, oneOf(CredentialAuto, CredentialSecret, CredentialCertificate, CredentialWorkload, CredentialManaged)),
		str("", "AZURE_CLIENT_SECRET", "",
			"Client secret of the app registration; environment only, so it stays out of process lists. Required with --credential secret.",
			func(c *Config) *string { return &c.ClientSecret }, checkNoControl).hide(),
		str("", "AZURE_CLIENT_CERTIFICATE_PATH", "",
			"PEM or PKCS#12 file holding the app registration's certificate and its private key, for --credential certificate.",
			func(c *Config) *string { return &c.ClientCertificatePath }, checkOptionalFile),
		str("", "AZURE_CLIENT_CERTIFICATE_PASSWORD", "",
			"Password of AZURE_CLIENT_CERTIFICATE_PATH's private key, if it has one.",
			func(c *Config) *string { return &c.ClientCertificatePassword }, checkNoControl).hide(),
		boolean("", "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "false",
			"Send the certificate chain (x5c) with each certificate assertion, for subject name/issuer authentication.",
			func(c *Config) *bool { return &c.SendCertificateChain }),
		str("", "AZURE_FEDERATED_TOKEN_FILE", "",
			"File holding the federated token of workload identity (AKS injects it), for --credential workload.",
			func(c *Config) *string { return &c.FederatedTokenFile }, checkOptionalFile),
		str("authority-host", "AZURE_AUTHORITY_HOST", "",
			"Microsoft Entra authority host (https); empty for the cloud's (https://login.microsoftonline.com/ for global).",
			func(c *Config) *string { return &c.AuthorityHost }, checkAuthority).normalizeWith(addSlash).redactWith(redactURLs).
			whenDefaulted(func(c *Config) { c.AuthorityHost = c.cloudOf().Authority }),
		str("ca-file", "SITEFOLLOW_CA_FILE", "",
			"PEM file of extra root certificates trusted for Graph and the authority host.",
			func(c *Config) *string { return &c.CAFile }, checkCAFile),

		str("http-addr", "SITEFOLLOW_HTTP_ADDR", ":8080",
			"host:port serving /livez, /readyz and /metrics.",
			func(c *Config) *string { return &c.HTTPAddr }, checkHostPort),

		integer("batch-max-sites", "SITEFOLLOW_BATCH_MAX_SITES", "20",
			"Most sites sent in one Graph call; a full batch is sent at once.",
			func(c *Config) *int { return &c.BatchMaxSites }, 1, 1000),
		duration("batch-linger", "SITEFOLLOW_BATCH_LINGER", "1s",
			"How long a user's batch waits for more sites before it is sent.",
			func(c *Config) *time.Duration { return &c.BatchLinger }, between(time.Millisecond, time.Minute)),
		duration("batch-quiet", "SITEFOLLOW_BATCH_QUIET", "100ms",
			"Once every request in the stream has been delivered and none arrived for this long, pending batches are sent without waiting out the linger; 0 disables.",
			func(c *Config) *time.Duration { return &c.BatchQuiet }, between(0, time.Minute)),
		integer("event-max-sites", "SITEFOLLOW_EVENT_MAX_SITES", "100",
			"Most siteIds one request event may carry; larger events are dead-lettered.",
			func(c *Config) *int { return &c.EventMaxSites }, 1, 10000),
		integer("event-max-bytes", "SITEFOLLOW_EVENT_MAX_BYTES", "65536",
			"Largest request event in bytes; larger events are dead-lettered as invalidEvent without being parsed, their payload cut.",
			func(c *Config) *int { return &c.EventMaxBytes }, 1024, 64<<20),
		duration("ack-wait", "SITEFOLLOW_ACK_WAIT", "60s",
			"How long JetStream waits for an ack before redelivering a request.",
			func(c *Config) *time.Duration { return &c.AckWait }, between(5*time.Second, 12*time.Hour)),
		integer("max-deliver", "SITEFOLLOW_MAX_DELIVER", "10",
			"Deliveries of a request before it is dead-lettered; counted by the consumer (the JetStream consumer's own limit is unlimited, so no request is stranded).",
			func(c *Config) *int { return &c.MaxDeliver }, 2, 1000),
		integer("max-ack-pending", "SITEFOLLOW_MAX_ACK_PENDING", "200000",
			"Most unacknowledged requests in flight; at least 4 × --batch-max-sites.",
			func(c *Config) *int { return &c.MaxAckPending }, 1, 1000000),
		integer("held-memory-mib", "SITEFOLLOW_HELD_MEMORY_MIB", "40",
			"Memory for requests held to batch, in MiB (about 180 bytes each): a backlog spread over many users is coalesced only as far as it fits.",
			func(c *Config) *int { return &c.HeldMemoryMiB }, 1, 65536),
		integer("memory-limit-mib", "SITEFOLLOW_MEMORY_LIMIT_MIB", "72",
			"Soft limit of the process's Go heap in MiB (as GOMEMLIMIT): near it garbage is collected sooner rather than the heap doubling; 0 leaves the runtime's own.",
			func(c *Config) *int { return &c.MemoryLimitMiB }, 0, 1<<20),
		duration("held-horizon", "SITEFOLLOW_HELD_HORIZON", "10m",
			"When Graph throttles, hold at most what its pace sends in full calls within this time; beyond it stop pulling and leave work to other replicas.",
			func(c *Config) *time.Duration { return &c.HeldHorizon }, between(time.Second, 24*time.Hour)),
		integer("max-concurrency", "SITEFOLLOW_MAX_CONCURRENCY", "64",
			"Most users whose Graph calls run at the same time.",
			func(c *Config) *int { return &c.MaxConcurrency }, 1, 1024),
		duration("nak-delay", "SITEFOLLOW_NAK_DELAY", "5s",
			"Redelivery delay after a transient failure; later ones grow up to --nak-max-delay.",
			func(c *Config) *time.Duration { return &c.NakBaseDelay }, between(time.Millisecond, time.Hour)),
		duration("nak-max-delay", "SITEFOLLOW_NAK_MAX_DELAY", "5m",
			"Longest redelivery delay after a transient failure.",
			func(c *Config) *time.Duration { return &c.NakMaxDelay }, between(time.Millisecond, 24*time.Hour)),
		duration("new-user-window", "SITEFOLLOW_NEW_USER_WINDOW", "24h",
			"How long after a request's occurredAt (else its publish time) Graph may answer as if the user did not exist (404, resourceBeingProvisioned) before it is dead-lettered as userNotFound; meanwhile it waits, not spending --max-deliver. 0: dead-letter at once.",
			func(c *Config) *time.Duration { return &c.NewUserWindow }, between(0, 30*24*time.Hour)),
		duration("shutdown-timeout", "SITEFOLLOW_SHUTDOWN_TIMEOUT", "25s",
			"How long shutdown waits for in-flight work before giving up.",
			func(c *Config) *time.Duration { return &c.ShutdownTimeout }, between(time.Second, time.Hour)),

		str("log-level", "SITEFOLLOW_LOG_LEVEL", "info",
			"Least severe level logged: trace, debug, info, warn or error.",
			func(c *Config) *string { return &c.LogLevel }, oneOf("trace", "debug", "info", "warn", "error")),
		str("log-format", "SITEFOLLOW_LOG_FORMAT", "json",
			"Log format: json, or console for people.",
			func(c *Config) *string { return &c.LogFormat }, oneOf("json", "console")),
		boolean("pprof", "SITEFOLLOW_PPROF", "false",
			"Serve /debug/pprof on --pprof-addr.",
			func(c *Config) *bool { return &c.Pprof }),
		str("pprof-addr", "SITEFOLLOW_PPROF_ADDR", "127.0.0.1:6060",
			"host:port serving /debug/pprof when --pprof is on; apart from --http-addr, so probes and scrapers never reach profiles.",
			func(c *Config) *string { return &c.PprofAddr }, checkHostPort),
	}
}

// relation is a check involving more than one setting; the error is
// reported against the setting named by key.
type relation struct {
	key   string
	check func(c *Config, name func(key string) string) error
}

func relations() []relation {
	return append(append(cloudRelations(), credentialRelations()...), []relation{
		{"nats-password", func(c *Config, name func(string) string) error {
			if c.NATSPassword != "" && c.NATSUser == "" {
				return fmt.Errorf("needs %s", name("nats-user"))
			}
			return nil
		}},
		{"nats-user", func(c *Config, name func(string) string) error {
			if c.NATSUser != "" && c.NATSPassword == "" {
				return fmt.Errorf("needs %s", name("nats-password"))
			}
			return nil
		}},
		{"nats-token", func(c *Config, name func(string) string) error {
			if c.NATSToken != "" && c.NATSUser != "" {
				return fmt.Errorf("cannot be combined with %s: give a token or a user, not both", name("nats-user"))
			}
			return nil
		}},
		{"nats-cert", func(c *Config, name func(string) string) error {
			if c.NATSCertFile != "" && c.NATSKeyFile == "" {
				return fmt.Errorf("needs %s, the certificate's private key", name("nats-key"))
			}
			return nil
		}},
		{"nats-key", func(c *Config, name func(string) string) error {
			if c.NATSKeyFile != "" && c.NATSCertFile == "" {
				return fmt.Errorf("needs %s, the certificate it belongs to", name("nats-cert"))
			}
			return nil
		}},
		{"ack-wait", func(c *Config, name func(string) string) error {
			if c.AckWait < 3*c.BatchLinger {
				return fmt.Errorf("must be at least 3 × %s (%v) so batches are sent long before redelivery", name("batch-linger"), c.BatchLinger)
			}
			return nil
		}},
		{"max-ack-pending", func(c *Config, name func(string) string) error {
			if c.MaxAckPending < 4*c.BatchMaxSites {
				return fmt.Errorf("must be at least 4 × %s (%d): with fewer requests in flight batches never fill and are only sent when %s expires",
					name("batch-max-sites"), 4*c.BatchMaxSites, name("batch-linger"))
			}
			return nil
		}},
		{"memory-limit-mib", func(c *Config, name func(string) string) error {
			if c.MemoryLimitMiB > 0 && c.MemoryLimitMiB < c.HeldMemoryMiB+32 {
				return fmt.Errorf("must be 0 or at least %s (%d) + 32: what is held must fit with room for the rest", name("held-memory-mib"), c.HeldMemoryMiB)
			}
			return nil
		}},
		{"lease-ttl", func(c *Config, name func(string) string) error {
			if c.LeaseTTL < c.GraphTimeout+10*time.Second {
				return fmt.Errorf("must be at least %s (%v) + 10s: a lease must outlive every Graph call made under it", name("graph-timeout"), c.GraphTimeout)
			}
			return nil
		}},
		{"nak-max-delay", func(c *Config, name func(string) string) error {
			if c.NakMaxDelay < c.NakBaseDelay {
				return fmt.Errorf("must not be less than %s (%v)", name("nak-delay"), c.NakBaseDelay)
			}
			return nil
		}},
		{"dlq-stream", func(c *Config, name func(string) string) error {
			if c.DLQStream == c.Stream {
				return fmt.Errorf("must differ from %s", name("stream"))
			}
			return nil
		}},
		{"dlq-subject-prefix", func(c *Config, name func(string) string) error {
			if subjectsOverlap(c.DLQSubjectPrefix+".>", c.StreamSubjects) {
				return fmt.Errorf("dead-letter subjects %s.> overlap %s %q", c.DLQSubjectPrefix, name("stream-subjects"), c.StreamSubjects)
			}
			return nil
		}},
		{"budget-subject", func(c *Config, name func(string) string) error {
			// A stream capturing the heartbeats would take them for requests
			// (or dead letters) and fill up with them.
			for _, captured := range []struct{ setting, filter string }{
				{"stream-subjects", c.StreamSubjects},
				{"dlq-subject-prefix", c.DLQSubjectPrefix + ".>"},
			} {
				if subjectsOverlap(c.BudgetSubject+".>", captured.filter) {
					return fmt.Errorf("budget subjects %s.> overlap %s %q", c.BudgetSubject, name(captured.setting), captured.filter)
				}
			}
			return nil
		}},
	}...)
}

// bind makes a spec for a field of type T from its parser, printer and check.
func bind[T any](s Setting, field func(*Config) *T, parse func(string) (T, error), show func(T) string, check func(T) error) spec {
	return spec{
		Setting: s,
		set: func(c *Config, raw string) error {
			v, err := parse(raw)
			if err != nil {
				return err
			}
			*field(c) = v
			return nil
		},
		show:  func(c *Config) string { return show(*field(c)) },
		check: func(c *Config) error { return check(*field(c)) },
	}
}

func str(flag, env, def, desc string, field func(*Config) *string, check func(string) error) spec {
	s := bind(Setting{Flag: flag, Env: env, Default: def, Type: "string", Description: desc}, field,
		func(v string) (string, error) { return v, nil },
		func(v string) string { return v }, check)
	s.text = true
	return s
}

func integer(flag, env, def, desc string, field func(*Config) *int, lo, hi int) spec {
	return bind(Setting{Flag: flag, Env: env, Default: def, Type: "int", Description: desc}, field,
		func(v string) (int, error) {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return 0, errors.New("must be an integer")
			}
			return n, nil
		},
		strconv.Itoa,
		func(n int) error {
			if n < lo || n > hi {
				return fmt.Errorf("must be between %d and %d", lo, hi)
			}
			return nil
		})
}

func number(flag, env, def, desc string, field func(*Config) *float64, lo, hi float64) spec {
	return bind(Setting{Flag: flag, Env: env, Default: def, Type: "number", Description: desc}, field,
		func(v string) (float64, error) {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return 0, errors.New("must be a number")
			}
			return f, nil
		},
		func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) },
		func(f float64) error {
			if f < lo || f > hi {
				return fmt.Errorf("must be between %g and %g", lo, hi)
			}
			return nil
		})
}

func duration(flag, env, def, desc string, field func(*Config) *time.Duration, check func(time.Duration) error) spec {
	return bind(Setting{Flag: flag, Env: env, Default: def, Type: "duration", Description: desc}, field,
		func(v string) (time.Duration, error) { return time.ParseDuration(strings.TrimSpace(v)) },
		time.Duration.String, check)
}

func boolean(flag, env, def, desc string, field func(*Config) *bool) spec {
	s := bind(Setting{Flag: flag, Env: env, Default: def, Type: "bool", Description: desc}, field,
		parseBool, strconv.FormatBool, func(bool) error { return nil })
	s.isBool = true
	return s
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, errors.New("must be true, false, 1 or 0")
}

// require rejects an empty value, saying where the value can be given.
func (s spec) require() spec {
	s.Required = true
	where := s.Env
	if s.Flag != "" {
		where = "--" + s.Flag + " or " + s.Env
	}
	check, show := s.check, s.show
	s.check = func(c *Config) error {
		if show(c) == "" {
			return fmt.Errorf("is required; set %s", where)
		}
		return check(c)
	}
	return s
}

func (s spec) hide() spec {
	s.secret = true
	return s
}

// normalizeWith rewrites a text value as it is loaded.
func (s spec) normalizeWith(f func(string) string) spec {
	set := s.set
	s.set = func(c *Config, raw string) error { return set(c, f(raw)) }
	return s
}

// whenDefaulted registers f to be told that the setting took its default.
func (s spec) whenDefaulted(f func(c *Config)) spec {
	s.defaulted = f
	return s
}

// redactWith hides parts of a text value (such as URL passwords) wherever it
// is shown.
func (s spec) redactWith(f func(string) string) spec {
	show := s.show
	s.show = func(c *Config) string { return f(show(c)) }
	return s
}

func between(lo, hi time.Duration) func(time.Duration) error {
	return func(d time.Duration) error {
		if d < lo || d > hi {
			return fmt.Errorf("must be between %v and %v", lo, hi)
		}
		return nil
	}
}

func oneOf(allowed ...string) func(string) error {
	return func(v string) error {
		for _, a := range allowed {
			if v == a {
				return nil
			}
		}
		return fmt.Errorf("must be one of %s", strings.Join(allowed, ", "))
	}
}
