package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/sitefollow/sitefollow/internal/budget"
	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphclient"
	"github.com/sitefollow/sitefollow/internal/handler"
	"github.com/sitefollow/sitefollow/internal/ledger"
	"github.com/sitefollow/sitefollow/internal/natsconn"
	"github.com/sitefollow/sitefollow/internal/ops"
	"github.com/sitefollow/sitefollow/internal/provision"
)

// serveCommand is `consumer run`: load and validate settings, then serve.
func serveCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stdout)
	if err != nil {
		return err
	}
	log, err := config.NewLogger(cfg, stderr)
	if err != nil {
		return err
	}
	if cfg.MemoryLimitMiB > 0 {
		// The process's, so set here rather than in serve, which the
		// benchmark and tests also run inside other processes.
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(int64(cfg.MemoryLimitMiB) << 20))
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
		Kind:     cfg.CredentialKind(),
		TenantID: cfg.TenantID, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		CertificatePath: cfg.ClientCertificatePath, CertificatePassword: cfg.ClientCertificatePassword,
		SendCertificateChain: cfg.SendCertificateChain, FederatedTokenFile: cfg.FederatedTokenFile,
		AuthorityHost: cfg.AuthorityHost, HTTPClient: httpClient,
	})
	if err != nil {
		return err
	}
	natsClosed := make(chan struct{})
	target, err := resolveNATS(ctx, cfg.NATS())
	if err != nil {
		return err
	}
	if target.Context != "" {
		log.Info().Str("context", target.Context).Str("server", target.Servers()).Msg("using nats context")
	}
	var natsFailure readiness
	nc, err := connectNATS(target, log, &natsFailure, natsClosed)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := ops.NewRegistry()
	// The replicas share one Graph budget over NATS (see internal/budget).
	share, err := budget.New(budget.Config{
		Conn: nc, Subject: cfg.BudgetSubject, MaxPause: cfg.GraphMaxRetryAfter,
		Logger: log.With().Str("component", "budget").Logger(),
	})
	if err != nil {
		return err
	}
	// A beta followingSites call carries a batch's follows and unfollows
	// together, and its 200 lists them all.
	answerSites := cfg.BatchMaxSites
	if graphclient.API(cfg.GraphAPI) == graphclient.APIBetaFollowingSites {
		answerSites *= 2
	}
	graph, err := graphclient.New(graphclient.Config{
		BaseURL: cfg.GraphURL,
		API:     graphclient.API(cfg.GraphAPI),
		// Ignored by the client with the beta API.
		JSONBatch: cfg.GraphJSONBatch,
		// The cloud's, whatever host SITEFOLLOW_GRAPH_URL names.
		Scope:          cfg.GraphScope(),
		UserAgent:      fmt.Sprintf("NONISV|%s|sitefollow/%s", cfg.GraphOrg, version),
		Credential:     cred,
		HTTPClient:     httpClient,
		MaxAttempts:    cfg.GraphMaxAttempts,
		MaxRetryAfter:  cfg.GraphMaxRetryAfter,
		RequestTimeout: cfg.GraphTimeout,
		// An answer need be no longer than a full batch's, and no more
		// answers are read at once than users are served at once.
		MaxResponseBytes:  graphclient.ResponseBytesFor(answerSites),
		MaxResponseMemory: int64(cfg.MaxConcurrency) * int64(graphclient.ResponseBytesFor(answerSites)),
		MaxConcurrency:    cfg.MaxConcurrency,
		Pacing: graphclient.Pacing{
			MaxRate: cfg.GraphMaxRPS, Budget: cfg.GraphBudget.Units, Window: cfg.GraphBudget.Window, CallCost: cfg.GraphCallCost,
		},
		Throttled:        share.Throttled,
		SiteURLCacheTTL:  cfg.SiteURLCacheTTL,
		SiteURLCacheSize: cfg.SiteURLCacheSize,
		Logger:           log.With().Str("component", "graph").Logger(),
		Metrics:          graphclient.NewMetrics(reg),
	})
	if err != nil {
		return err
	}
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

	// Readiness: connected, streams present, a token obtained, every dead
	// letter stored.
	handlerMetrics := handler.NewMetrics(reg)
	var streamsReady readiness
	checks := []ops.Check{
		{Name: "nats", Func: func(context.Context) error { return natsDown(nc, &natsFailure) }},
		{Name: "streams", Func: streamsReady.check},
		// Asking Entra costs a token request and, while the credential
		// fails, answers with the token URL, tenant, scope and Entra's own
		// text: ask at most every tokenCheckEvery whatever the probe rate,
		// and leave the details to the log.
		{Name: "token", Func: graph.CheckToken, Every: tokenCheckEvery, Failing: "cannot obtain a Graph token (see log)"},
		{Name: "dead letters", Func: func(context.Context) error {
			if n := handlerMetrics.Stranded(); n > 0 {
				return fmt.Errorf("%d requests whose dead letter cannot be stored are kept for redelivery (see the log)", n)
			}
			return nil
		}},
	}
	opsServer := ops.New(cfg.HTTPAddr, reg, checks, log)
	opsServer.SetLiveness(ops.Check{Name: "nats", Func: func(context.Context) error {
		if nc.IsClosed() {
			return errNATSClosed
		}
		return nil
	}})
	addr, err := opsServer.Listen()
	if err != nil {
		return err
	}
	log.Info().Str("addr", addr.String()).Msg("serving /livez, /readyz, /metrics")
	var pprofServer *ops.Server
	if cfg.Pprof {
		pprofServer = ops.NewPprof(cfg.PprofAddr, log)
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
		HeldMemory:      cfg.HeldMemoryMiB << 20,
		HeldHorizon:     cfg.HeldHorizon,
		AckWait:         cfg.AckWait,
		NakBaseDelay:    cfg.NakBaseDelay,
		NakMaxDelay:     cfg.NakMaxDelay,
		NewUserWindow:   cfg.NewUserWindow,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Pace:            graph.PaceLimit,
		EventMaxBytes:   cfg.EventMaxBytes,
		// The client's buffer must take the largest message the server
		// accepts, or such a message would never be delivered.
		PullMaxBytes: max(16<<20, int(nc.MaxPayload())+64<<10),
		Conn:         nc,
	}
	dead := dlq.NewPublisher(js, cfg.DLQSubjectPrefix)
	if cfg.Provision {
		// A dead-letter stream deleted while running is re-created, as the
		// request stream is, rather than leaving every dead letter unstorable.
		dead.SetRecreate(func(ctx context.Context) error { return provision.EnsureDeadLetterStream(ctx, js, spec) })
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return opsServer.Run(gctx) })
	g.Go(func() error {
		// Sharing the budget is an optimisation: without it (no permission
		// on the subject, say) each replica paces on what Graph tells it.
		if err := share.Run(gctx, graph); err != nil {
			log.Warn().Err(err).Msg("not sharing the Graph budget with other replicas; each paces alone")
		}
		return nil
	})
	if pprofServer != nil {
		g.Go(func() error { return pprofServer.Run(gctx) })
	}
	g.Go(func() error {
		// A connection closed for good cannot come back: stop, and exit
		// non-zero so the process is restarted.
		select {
		case <-natsClosed:
			log.Error().Msg("nats connection closed for good; exiting")
			return errNATSClosed
		case <-gctx.Done():
			return nil
		}
	})
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
				// Say why the streams cannot be reached (no connection, no
				// JetStream) rather than that a stream request timed out.
				if err := natsDown(nc, &natsFailure); err != nil {
					streamsReady.set(err)
					return err
				}
				if err := natsconn.CheckJetStream(ctx, nc, target.Servers()); err != nil {
					streamsReady.set(err)
					return err
				}
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
		log.Info().Str("stream", cfg.Stream).Str("dlqStream", cfg.DLQStream).Str("consumer", cfg.Consumer).
			Bool("provisioned", cfg.Provision).Msg("streams ready")
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

// errNATSClosed says the NATS connection closed while the process still
// needed it; the client never reconnects a closed connection.
var errNATSClosed = errors.New("nats connection closed")

// natsErrBytes bounds error text from the server in a log line.
const natsErrBytes = 1024

// connectNATS connects for good: every failure, including an authorization
// error (wrong password, revoked credentials), is retried with backoff and
// logged with the server and its cause, so the consumer recovers by itself
// once the server lets it in. failure holds the latest failure, cleared on
// connecting, for readiness. closed is closed if the connection is closed
// anyway (the client gives up after some protocol errors).
func connectNATS(target natsconn.Target, log zerolog.Logger, failure *readiness, closed chan<- struct{}) (*nats.Conn, error) {
	var once sync.Once
	servers := target.Servers()
	natsErr := func(err error) string { return event.Truncate(err.Error(), natsErrBytes) }
	failed := func(err error, msg string) {
		if err == nil {
			return
		}
		err = natsconn.Classify(servers, err)
		failure.set(err)
		logNATSError(log, err, natsErr(err), msg)
	}
	opts := target.Options(
		nats.Name("sitefollow/"+version),
		// Retry forever: NATS restarts are routine and the consumer must
		// recover on its own.
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		// The client gives up on a server that refused the same credentials
		// twice; credentials get fixed on the server, so keep trying.
		nats.IgnoreAuthErrorAbort(),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return min(time.Second<<min(max(attempts-1, 0), 4), 10*time.Second)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Str("server", servers).Str("error", natsErr(err)).Msg("nats disconnected")
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { failed(err, "nats connect failed; retrying") }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			logNATSError(log, err, natsErr(err), "nats error")
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			failure.set(nil)
			logConnected(log, c, "nats reconnected")
		}),
		nats.ConnectHandler(func(c *nats.Conn) {
			failure.set(nil)
			logConnected(log, c, "nats connected")
		}),
		nats.ClosedHandler(func(c *nats.Conn) {
			if err := c.LastError(); err != nil {
				log.Warn().Str("server", servers).Str("error", natsErr(err)).Msg("nats connection closed")
			}
			once.Do(func() { close(closed) })
		}),
	)
	nc, err := nats.Connect(target.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", natsconn.Classify(servers, err))
	}
	return nc, nil
}

// logConnected says which server (and cluster, if any) the connection
// reached.
func logConnected(log zerolog.Logger, c *nats.Conn, msg string) {
	ev := log.Info().Str("url", c.ConnectedUrlRedacted()).Str("server", event.Truncate(c.ConnectedServerName(), 256))
	if cluster := c.ConnectedClusterName(); cluster != "" {
		ev = ev.Str("cluster", event.Truncate(cluster, 256))
	}
	ev.Msg(msg)
}

// natsDown says why nc is not connected: the latest classified failure
// when there is one. It is nil while connected.
func natsDown(nc *nats.Conn, failure *readiness) error {
	if nc.IsConnected() {
		return nil
	}
	if err := failure.check(context.Background()); err != nil && !errors.Is(err, errNotYet) {
		return err
	}
	return fmt.Errorf("not connected (%s)", strings.ToLower(nc.Status().String()))
}

// logNATSError logs an error from the NATS client: at error level when an
// operator must act (authorization, permissions, TLS trust, no JetStream),
// at warn otherwise; a classified error also gives the server and cause.
func logNATSError(log zerolog.Logger, err error, text, msg string) {
	if err == nil {
		return
	}
	ev := log.Warn()
	var classified *natsconn.Error
	isClassified := errors.As(err, &classified)
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		errors.Is(err, nats.ErrPermissionViolation) || errors.Is(err, nats.ErrAccountAuthExpired) ||
		isClassified && (classified.Cause == natsconn.CauseTLS || classified.Cause == natsconn.CauseNoJetStream) {
		ev = log.Error()
	}
	if isClassified {
		ev = ev.Str("server", classified.Server).Str("cause", classified.Cause.String())
	}
	ev.Str("error", text).Msg(msg)
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
		log.Warn().Err(err).Str("retryIn", d.Round(time.Millisecond).String()).Msg(what + " failed; retrying")
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
