package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// simUsage heads `consumer sim --help`; the flags follow.
const simUsage = `usage: consumer sim [flags]

Serves the Microsoft Graph and Entra simulator the demo uses, on loopback,
until interrupted: Graph (followedSites add and remove, and
GET /v1.0/users/{id}/followedSites to look) over plain HTTP, the token
endpoint over TLS with a freshly generated certificate written to a CA file.
It prints the environment that points ` + "`consumer run`" + ` at it as export lines,
or writes KEY=VALUE lines to --env-file. Every well-formed site id can be
followed unless --site names the only ones that exist.

flags:
`

// simEnvKeys are the settings sim hands to `consumer run`, in print order.
func simEnvKeys() []string {
	return []string{"SITEFOLLOW_GRAPH_URL", "AZURE_AUTHORITY_HOST", "AZURE_TENANT_ID",
		"AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "SITEFOLLOW_CA_FILE"}
}

// simCommand is `consumer sim`.
func simCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	addr := fs.String("addr", "127.0.0.1:0", "loopback host:port of Graph (plain HTTP); port 0 picks a free one")
	authAddr := fs.String("authority-addr", "127.0.0.1:0", "loopback host:port of the Entra token endpoint (TLS)")
	envFile := fs.String("env-file", "", "write KEY=VALUE lines to this file instead of printing export lines")
	caFile := fs.String("ca-file", "", "write the authority's CA certificate here (default a temporary file, removed at exit)")
	latency := fs.Duration("latency", 0, "latency added to every Graph call")
	jitter := fs.Duration("jitter", 0, "random extra latency per Graph call, uniform in [0, jitter)")
	budget := fs.String("budget", "", "the app's Graph budget as a token bucket, CALLS/PERIOD: 50/s, 600/1m (default none)")
	burst := fs.Int("burst", 1, "token bucket size for --budget")
	throttleRate := fs.Float64("throttle-rate", 0, "probability in [0, 1] that a Graph call is answered 429 with --retry-after")
	retryAfter := fs.String("retry-after", "1", "Retry-After, in seconds, of --throttle-rate's 429s")
	errorRate := fs.Float64("error-rate", 0, "probability in [0, 1] that a Graph call is answered 503")
	siteFailureRate := fs.Float64("site-failure-rate", 0, "probability in [0, 1] that each site of a call fails transiently (207 serviceNotAvailable)")
	seed := fs.Int64("seed", 0, "seed of the random faults, to replay a run (default random, printed)")
	var sites siteList
	fs.Var(&sites, "site", "`SITE` id that exists; repeat for more (default every well-formed site id exists)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, simUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return err
		}
		return fmt.Errorf("sim: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("sim: unexpected argument %s", strconv.QuoteToASCII(bound(fs.Arg(0), 64)))
	}

	opts := graphsim.Options{Sites: sites, AllowAnySite: len(sites) == 0, Latency: *latency,
		GraphAddr: *addr, AuthorityAddr: *authAddr}
	var errs []error
	if *latency < 0 || *jitter < 0 {
		errs = append(errs, errors.New("--latency and --jitter must not be negative"))
	}
	if *budget != "" {
		rate, err := parseBudget(*budget)
		if err != nil {
			errs = append(errs, fmt.Errorf("--budget: %w", err))
		}
		opts.Budget = graphsim.Budget{Shape: graphsim.TokenBucket, Rate: rate, Burst: *burst}
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"--throttle-rate", *throttleRate}, {"--error-rate", *errorRate}, {"--site-failure-rate", *siteFailureRate}} {
		if !(p.v >= 0 && p.v <= 1) {
			errs = append(errs, fmt.Errorf("%s %v: must be a probability in [0, 1]", p.name, p.v))
		}
	}
	if s, err := strconv.ParseFloat(*retryAfter, 64); err != nil || s < 0 {
		errs = append(errs, fmt.Errorf("--retry-after %s: must be a number of seconds", strconv.QuoteToASCII(bound(*retryAfter, 32))))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	chaos := graphsim.Chaos{Seed: *seed, Throttle: *throttleRate, RetryAfter: *retryAfter,
		Unavailable: *errorRate, SiteTransient: *siteFailureRate, LatencyJitter: *jitter}
	if chaos.Seed == 0 {
		chaos.Seed = rand.Int64N(1<<62) + 1
	}

	sim, err := graphsim.New(opts)
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	defer sim.Close()
	sim.SetChaos(chaos)

	ca := *caFile
	if ca == "" {
		dir, err := os.MkdirTemp("", "sitefollow-sim-")
		if err != nil {
			return fmt.Errorf("sim: %w", err)
		}
		defer removeAll(stderr, dir)
		ca = filepath.Join(dir, "graphsim-ca.pem")
	}
	if ca, err = filepath.Abs(ca); err != nil {
		return fmt.Errorf("sim: ca file: %w", err)
	}
	if err := os.WriteFile(ca, sim.CertPEM(), 0o600); err != nil {
		return fmt.Errorf("sim: write ca file: %w", err)
	}
	env := map[string]string{
		"SITEFOLLOW_GRAPH_URL": sim.GraphURL(),
		"AZURE_AUTHORITY_HOST": sim.AuthorityURL(),
		"AZURE_TENANT_ID":      sim.TenantID(),
		"AZURE_CLIENT_ID":      sim.ClientID(),
		"AZURE_CLIENT_SECRET":  sim.ClientSecret(),
		"SITEFOLLOW_CA_FILE":   ca,
	}
	if *envFile != "" {
		if err := writeEnvFile(*envFile, env); err != nil {
			return fmt.Errorf("sim: %w", err)
		}
		fmt.Fprintf(stderr, "sim: wrote the environment for `consumer run` to %s (load it with: set -a; . %s; set +a)\n", *envFile, shellQuote(*envFile))
	} else {
		for _, k := range simEnvKeys() {
			fmt.Fprintf(stdout, "export %s=%s\n", k, shellQuote(env[k]))
		}
	}
	faults := ""
	if *throttleRate > 0 || *errorRate > 0 || *siteFailureRate > 0 || *jitter > 0 {
		faults = fmt.Sprintf("; random faults with --seed %d", chaos.Seed)
	}
	fmt.Fprintf(stderr, "sim: Graph at %s, token endpoint at %s%s/oauth2/v2.0/token%s; Ctrl-C stops it\n",
		sim.GraphURL(), sim.AuthorityURL(), sim.TenantID(), faults)

	<-ctx.Done()
	sim.Close()
	if err := sim.Err(); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}

// parseBudget reads CALLS/PERIOD ("50/s", "600/1m", "5/500ms") as calls a
// second. A period without a number counts one unit.
func parseBudget(s string) (float64, error) {
	calls, period, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("%s: want CALLS/PERIOD such as 50/s", strconv.QuoteToASCII(bound(s, 32)))
	}
	n, err := strconv.ParseFloat(calls, 64)
	if err != nil || !(n > 0) || n > 1e9 {
		return 0, fmt.Errorf("%s: calls must be a positive number", strconv.QuoteToASCII(bound(s, 32)))
	}
	if period != "" && (period[0] < '0' || period[0] > '9') {
		period = "1" + period
	}
	d, err := time.ParseDuration(period)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: period must be a duration such as s, 1m or 500ms", strconv.QuoteToASCII(bound(s, 32)))
	}
	return n / d.Seconds(), nil
}

// writeEnvFile writes env as KEY=VALUE lines, whole or not at all
// (a temporary file renamed into place), so a reader never sees half.
func writeEnvFile(path string, env map[string]string) error {
	var b strings.Builder
	for _, k := range simEnvKeys() {
		fmt.Fprintf(&b, "%s=%s\n", k, env[k])
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".sitefollow-env-*")
	if err != nil {
		return fmt.Errorf("write env file: %w", err)
	}
	_, werr := tmp.WriteString(b.String())
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return errors.Join(fmt.Errorf("write env file: %w", err), os.Remove(tmp.Name()))
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return errors.Join(fmt.Errorf("write env file: %w", err), os.Remove(tmp.Name()))
	}
	return nil
}

// shellQuote quotes s for a POSIX shell unless it needs none.
func shellQuote(s string) string {
	safe := s != ""
	for i := 0; i < len(s) && safe; i++ {
		c := s[i]
		safe = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_./:,=@%+", c) >= 0
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
