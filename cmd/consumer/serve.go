package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/graphclient"
	"github.com/sitefollow/sitefollow/internal/handler"
	"github.com/sitefollow/sitefollow/internal/ledger"
	"github.com/sitefollow/sitefollow/internal/ops"
	"github.com/sitefollow/sitefollow/internal/provision"
)

// serveCommand is `consumer run`: load and validate settings, then serve.
func serveCommand(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := config.NewLogger(cfg, stderr)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, nil)
}

// started is told the ops address once the service listens; the demo and
// tests use it. It may be nil.
type started func(opsAddr string)

// serve runs the service until ctx is cancelled, then shuts down in order:
// stop pulling, flush, wait for Graph calls, settle, drain NATS.
func serve(ctx context.Context, cfg config.Config, log zerolog.Logger, onStart started) error {
	log.Info().Object("config", cfg).Str("version", version).Msg("starting sitefollow")
	httpClient, err := graphHTTPClient(cfg)
	if err != nil {
		return err
	}
	cred, err := graphclient.NewCredential(graphclient.CredentialConfig{
		TenantID: cfg.TenantID, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		AuthorityHost: cfg.AuthorityHost, HTTPClient: httpClient,
	})
	if err != nil {
		return err
	}
	reg := ops.NewRegistry()
	graph, err := graphclient.New(graphclient.Config{
		BaseURL:        cfg.GraphURL,
		UserAgent:      fmt.Sprintf("NONISV|%s|sitefollow/%s", cfg.GraphOrg, version),
		Credential:     cred,
		HTTPClient:     httpClient,
		MaxAttempts:    cfg.GraphMaxAttempts,
		MaxRetryAfter:  cfg.GraphMaxRetryAfter,
		RequestTimeout: cfg.GraphTimeout,
		Logger:         log.With().Str("component", "graph").Logger(),
		Metrics:        graphclient.NewMetrics(reg),
	})
	if err != nil {
		return err
	}

	nc, err := connectNATS(cfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	spec := provision.SpecFrom(cfg)
	spec.Report = func(note string) { log.Warn().Msg(note) }
	open := func(ctx context.Context) (jetstream.Consumer, error) {
		if cfg.Provision {
			return provision.Apply(ctx, js, spec)
		}
		return provision.Lookup(ctx, js, spec)
	}

	// Readiness: connected, streams present, a token obtained.
	var streamsReady readiness
	checks := []ops.Check{
		{Name: "nats", Func: func(context.Context) error {
			if !nc.IsConnected() {
				return fmt.Errorf("nats: %s", nc.Status())
			}
			return nil
		}},
		{Name: "streams", Func: streamsReady.check},
		// Asking Entra costs a token request and, while the credential
		// fails, answers with the token URL, tenant, scope and Entra's own
		// text: ask at most every tokenCheckEvery whatever the probe rate,
		// and leave the details to the log.
		{Name: "token", Func: graph.CheckToken, Every: tokenCheckEvery, Failing: "cannot obtain a Graph token (see log)"},
	}
	opsServer := ops.New(cfg.HTTPAddr, reg, checks, log.With().Str("component", "http").Logger())
	addr, err := opsServer.Listen()
	if err != nil {
		return err
	}
	log.Info().Str("addr", addr.String()).Msg("serving /livez, /readyz, /metrics")
	var pprofServer *ops.Server
	if cfg.Pprof {
		pprofServer = ops.NewPprof(cfg.PprofAddr, log.With().Str("component", "http").Logger())
		paddr, err := pprofServer.Listen()
		if err != nil {
			return err
		}
		log.Info().Str("addr", paddr.String()).Msg("serving /debug/pprof")
	}

	hcfg := handler.Config{
		BatchMaxSites:   cfg.BatchMaxSites,
		BatchLinger:     cfg.BatchLinger,
		BatchQuiet:      cfg.BatchQuiet,
		EventMaxSites:   cfg.EventMaxSites,
		MaxConcurrency:  cfg.MaxConcurrency,
		MaxDeliver:      cfg.MaxDeliver,
		MaxAckPending:   cfg.MaxAckPending,
		AckWait:         cfg.AckWait,
		NakBaseDelay:    cfg.NakBaseDelay,
		NakMaxDelay:     cfg.NakMaxDelay,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Pace:            graph.PaceLimit,
	}
	handlerMetrics := handler.NewMetrics(reg)
	dead := dlq.NewPublisher(js, cfg.DLQSubjectPrefix)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return opsServer.Run(gctx) })
	if pprofServer != nil {
		g.Go(func() error { return pprofServer.Run(gctx) })
	}
	g.Go(func() error {
		// Fail loudly at start-up on bad credentials; readiness keeps asking.
		if err := graph.CheckToken(gctx); err != nil {
			log.Error().Err(err).Msg("cannot obtain a Graph token; not ready until one is obtained")
		}
		return nil
	})
	g.Go(func() error {
		openReady := func(ctx context.Context) (jetstream.Consumer, error) {
			var c jetstream.Consumer
			err := retryForever(ctx, log, "open consumer", func() error {
				var err error
				c, err = open(ctx)
				var conflict *provision.ConflictError
				if errors.As(err, &conflict) {
					return backoff.Permanent(err)
				}
				return err
			})
			streamsReady.set(err)
			return c, err
		}
		// The ledger's bucket exists once the consumer could be opened.
		if _, err := openReady(gctx); err != nil {
			return stopped(ctx, err)
		}
		var led *ledger.Ledger
		err := retryForever(gctx, log, "open ledger", func() error {
			var err error
			led, err = ledger.Open(gctx, js, ledger.Config{
				Bucket: cfg.StateBucket, Stream: cfg.Stream, Owner: replicaName(), LeaseTTL: cfg.LeaseTTL,
			})
			return err
		})
		if err != nil {
			return stopped(ctx, err)
		}
		h := handler.New(hcfg, graph, dead, led, log.With().Str("component", "handler").Logger(), handlerMetrics)
		if onStart != nil {
			onStart(addr.String())
		}
		return stopped(ctx, h.Run(gctx, openReady))
	})
	err = g.Wait()
	// Acks are asynchronous publishes: drain so every ack reaches the server
	// before the process exits.
	if derr := nc.Drain(); derr != nil {
		log.Warn().Err(derr).Msg("nats drain")
	}
	waitClosed(nc, 10*time.Second)
	log.Info().Msg("stopped")
	return err
}

// tokenCheckEvery is how long /readyz reuses the token check's result.
const tokenCheckEvery = 10 * time.Second

// stopped is err, or nil when it only says the service was asked to stop.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// replicaName names this process in the leases it holds, for operators
// reading the state bucket: host, process id and a random suffix, since
// pods restart with the same host name and process id.
func replicaName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), uuid.NewString()[:8])
}

func connectNATS(cfg config.Config, log zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("sitefollow/" + version),
		// Retry forever: NATS restarts are routine and the consumer must
		// recover on its own.
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn().Err(err).Msg("nats disconnected")
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("url", c.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
	}
	if cfg.NATSCredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCredsFile))
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", cfg.NATSURL, err)
	}
	return nc, nil
}

func waitClosed(nc *nats.Conn, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// graphHTTPClient is the HTTP client for Graph and the authority: system
// roots plus SITEFOLLOW_CA_FILE, connections kept alive, HTTP/2 when offered,
// and redirects never followed (a bearer token or the client secret must not
// travel to wherever a redirect points).
func graphHTTPClient(cfg config.Config) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = max(cfg.MaxConcurrency*2, 16)
	t.MaxIdleConns = t.MaxIdleConnsPerHost * 2
	t.ForceAttemptHTTP2 = true
	roots, err := cfg.RootCAs()
	if err != nil {
		return nil, err
	}
	if roots != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t, CheckRedirect: graphclient.RefuseRedirect}, nil
}

// retryForever retries op with capped exponential backoff until it works or
// ctx ends; each failure is logged as a warning.
func retryForever(ctx context.Context, log zerolog.Logger, what string, op func() error) error {
	b := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(15*time.Second)), ctx)
	err := backoff.RetryNotify(op, b, func(err error, d time.Duration) {
		log.Warn().Err(err).Dur("retryIn", d).Msg(what + " failed; retrying")
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
