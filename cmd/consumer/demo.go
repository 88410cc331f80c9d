package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/natsembed"
)

// demoSites are the simulator's known sites, with names for the summary.
var demoSites = func() map[string]string {
	names := []string{"intranet", "hr-portal", "it-help", "benefits", "onboarding", "engineering",
		"sales", "marketing", "finance", "legal", "security", "facilities", "travel", "learning", "social", "news"}
	m := make(map[string]string, len(names))
	for i, n := range names {
		m[fmt.Sprintf("contoso.sharepoint.com,%08x-1d2e-4f60-8a9b-0c1d2e3f4a5b,%08x-aaaa-4bbb-8ccc-dddddddddddd", 0xda60e800+i, 0x712a5900+i)] = n
	}
	return m
}()

// A site id that is well-formed but unknown to the simulator: Graph answers
// 207 invalidRequest for it.
const missingSite = "contoso.sharepoint.com,deadbeef-0000-4000-8000-000000000000,deadbeef-0000-4000-8000-000000000001"

func siteByName(name string) string {
	for id, n := range demoSites {
		if n == name {
			return id
		}
	}
	panic("demo: unknown site name " + name)
}

type demoEvent struct {
	subject string
	body    string
	note    string
}

// demoScript is the scripted mix the demo publishes.
func demoScript() []demoEvent {
	js := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		return string(b)
	}
	req := func(user string, action event.Action, source string, names ...string) string {
		var ids []string
		for _, n := range names {
			ids = append(ids, siteByName(n))
		}
		return js(event.Request{UserID: user, Action: action, SiteIDs: ids, Source: source,
			OccurredAt: "2026-11-22T09:00:00Z"})
	}
	joinerSites := [][]string{
		{"intranet", "hr-portal", "it-help", "benefits", "onboarding", "news"},
		{"engineering", "security", "facilities", "travel", "learning", "social"},
	}
	joiners := []string{
		"8a1f3c2e-5b7d-4e9f-a1c3-2b4d6f8e0a11",
		"9b2e4d3f-6c8e-4fa0-b2d4-3c5e7f9a1b22",
		"ac3f5e40-7d9f-4ab1-83e5-4d6f8a0b2c33",
	}
	var script []demoEvent
	for _, j := range joiners {
		for _, part := range joinerSites {
			script = append(script, demoEvent{"sitefollow.requests.hr", req(j, event.Follow, "hr-joiner", part...), "HR joiner, six sites"})
		}
	}
	return append(script,
		demoEvent{"sitefollow.requests.app", req("alice@contoso.com", event.Follow, "app", "sales", "marketing"), "app follow"},
		demoEvent{"sitefollow.requests.app", req("alice@contoso.com", event.Unfollow, "app", "marketing"), "app unfollow superseding the follow"},
		demoEvent{"sitefollow.requests.app", req("bob@contoso.com", event.Unfollow, "app", "legal", "finance"), "app unfollow"},
		demoEvent{"sitefollow.requests.app", js(event.Request{UserID: "bob@contoso.com", Action: event.Follow,
			SiteIDs: []string{siteByName("news"), missingSite}, Source: "app"}), "one site does not exist"},
		demoEvent{"sitefollow.requests.app", `{"userId": "carol@contoso.com", "action": "follow", "siteIds": [`, "malformed JSON"},
		demoEvent{"sitefollow.requests.app", js(map[string]any{"userId": "../admin", "action": "follow",
			"siteIds": []string{siteByName("news")}}), "path characters in userId"},
	)
}

// demoCommand runs the real pipeline against an embedded NATS server and the
// Graph simulator, publishes the script, waits for it to settle and prints a
// summary. It fails if anything is left unsettled.
func demoCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: consumer demo [flags]\n\n"+
			"Runs the whole pipeline against an embedded NATS server and the Graph simulator,\n"+
			"publishes a scripted mix of requests and prints what became of them.\n\nflags:\n")
		fs.PrintDefaults()
	}
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for every request to settle")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "sitefollow-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer removeAll(stderr, dir)

	ns, err := natsembed.Start(natsembed.Options{StoreDir: filepath.Join(dir, "jetstream")})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer ns.Shutdown()
	var known []string
	for id := range demoSites {
		known = append(known, id)
	}
	sim, err := graphsim.New(graphsim.Options{Sites: known, Latency: 20 * time.Millisecond})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer sim.Close()
	// Bob follows two sites already, so his unfollow has something to do.
	sim.SetFollowed("bob@contoso.com", siteByName("legal"), siteByName("finance"), siteByName("intranet"))
	// Alice may not follow sales yet: her follow is dead-lettered, and
	// replayed once access is granted (replayFixed).
	sim.FailSite(siteByName("sales"), "accessDenied", 1)
	caFile := filepath.Join(dir, "graphsim-ca.pem")
	if err := os.WriteFile(caFile, sim.CertPEM(), 0o600); err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	// The pipeline gets the same settings a deployment would, pointed at the
	// embedded pieces; anything else comes from the caller's environment.
	overrides := map[string]string{
		"NATS_URL":              ns.ClientURL(),
		"SITEFOLLOW_GRAPH_URL":  sim.GraphURL(),
		"AZURE_AUTHORITY_HOST":  sim.AuthorityURL(),
		"AZURE_TENANT_ID":       sim.TenantID(),
		"AZURE_CLIENT_ID":       sim.ClientID(),
		"AZURE_CLIENT_SECRET":   sim.ClientSecret(),
		"SITEFOLLOW_CA_FILE":    caFile,
		"SITEFOLLOW_HTTP_ADDR":  "127.0.0.1:0",
		"SITEFOLLOW_PROVISION":  "true",
		"SITEFOLLOW_LOG_FORMAT": cmp.Or(getenv("SITEFOLLOW_LOG_FORMAT"), "console"),
		"SITEFOLLOW_LOG_LEVEL":  cmp.Or(getenv("SITEFOLLOW_LOG_LEVEL"), "info"),
		"SITEFOLLOW_GRAPH_ORG":  cmp.Or(getenv("SITEFOLLOW_GRAPH_ORG"), "Contoso"),
	}
	// Nothing of the caller's own NATS set-up applies to the embedded
	// server: no context, no credentials.
	for _, k := range config.NATSEnv() {
		if _, ok := overrides[k]; !ok {
			overrides[k] = ""
		}
	}
	overrides["XDG_CONFIG_HOME"] = dir
	cfg, err := config.Load(nil, func(k string) string {
		if v, ok := overrides[k]; ok {
			return v
		}
		return getenv(k)
	}, stderr)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	log, err := config.NewLogger(cfg, stderr)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- serve(runCtx, cfg, log, nil) }()

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	script := demoScript()
	if err := waitStream(ctx, js, cfg.Stream, *timeout); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	for _, ev := range script {
		if _, err := js.Publish(ctx, ev.subject, []byte(ev.body)); err != nil {
			return fmt.Errorf("demo: publish %s: %w", ev.note, err)
		}
	}
	settleErr := waitSettled(ctx, js, cfg, *timeout)
	if settleErr == nil {
		settleErr = replayFixed(ctx, stdout, stderr, func(k string) string {
			if v, ok := overrides[k]; ok {
				return v
			}
			return getenv(k)
		}, js, cfg, sim, *timeout)
	}
	stop()
	if err := <-served; err != nil {
		return fmt.Errorf("demo: pipeline: %w", err)
	}
	if err := printSummary(ctx, stdout, js, cfg, sim, len(script)); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if settleErr != nil {
		return fmt.Errorf("demo: %w", settleErr)
	}
	return nil
}

// replayFixed shows an operator's dead-letter replay: list what failed for
// lack of access, grant it in the simulator, replay with consumer dlq and
// wait for the replayed request to settle.
func replayFixed(ctx context.Context, stdout, stderr io.Writer, getenv func(string) string, js jetstream.JetStream, cfg config.Config, sim *graphsim.Server, timeout time.Duration) error {
	con := console{in: strings.NewReader(""), out: stdout, err: stderr}
	fmt.Fprintln(stdout, "\n$ consumer dlq list --code accessDenied")
	if err := dlqCommand(ctx, []string{"list", "--code", "accessDenied"}, getenv, con); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	fmt.Fprintln(stdout, "\n(access granted in the Graph simulator)\n$ consumer dlq replay --code accessDenied --yes")
	sim.ClearFaults()
	if err := dlqCommand(ctx, []string{"replay", "--code", "accessDenied", "--yes"}, getenv, con); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	return waitSettled(ctx, js, cfg, timeout)
}

func removeAll(w io.Writer, dir string) {
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintln(w, "demo: cleanup:", err)
	}
}

// poll calls cond every 50ms until it reports true, ctx ends or timeout
// passes; it returns the last error cond gave.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("timed out")
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func waitStream(ctx context.Context, js jetstream.JetStream, name string, timeout time.Duration) error {
	return poll(ctx, timeout, func() (bool, error) {
		_, err := js.Stream(ctx, name)
		return err == nil, err
	})
}

// waitSettled waits until the request stream is empty (WorkQueue retention
// removes a request once it is acknowledged) and nothing is pending.
func waitSettled(ctx context.Context, js jetstream.JetStream, cfg config.Config, timeout time.Duration) error {
	err := poll(ctx, timeout, func() (bool, error) {
		s, err := js.Stream(ctx, cfg.Stream)
		if err != nil {
			return false, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return false, err
		}
		return info.State.Msgs == 0, fmt.Errorf("%d requests still unsettled", info.State.Msgs)
	})
	if err != nil {
		return fmt.Errorf("wait for requests to settle: %w", err)
	}
	return nil
}

func printSummary(ctx context.Context, w io.Writer, js jetstream.JetStream, cfg config.Config, sim *graphsim.Server, published int) error {
	reqs, err := streamInfo(ctx, js, cfg.Stream)
	if err != nil {
		return err
	}
	letters, err := dlq.List(ctx, js, cfg.DLQStream)
	if err != nil {
		return err
	}
	calls := sim.Calls()
	ops := map[string]int{}
	sites, maxSites := 0, 0
	for _, c := range calls {
		ops[c.Op]++
		sites += len(c.SiteIDs)
		maxSites = max(maxSites, len(c.SiteIDs))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nsitefollow demo summary")
	fmt.Fprintf(tw, "  events published\t%d\n", published)
	fmt.Fprintf(tw, "  events acknowledged\t%d\t(%d left in %s)\n", uint64(published)-reqs.State.Msgs, reqs.State.Msgs, cfg.Stream)
	fmt.Fprintf(tw, "  Graph calls\t%d\t(followedSites/add %d, followedSites/remove %d)\n", len(calls), ops["add"], ops["remove"])
	if len(calls) > 0 {
		fmt.Fprintf(tw, "  sites per call\t%.1f\t(max %d, batch size %d)\n", float64(sites)/float64(len(calls)), maxSites, cfg.BatchMaxSites)
	}
	fmt.Fprintf(tw, "  dead-lettered\t%d\n", len(letters))
	codes := map[string]int{}
	for _, d := range letters {
		codes[d.Error.Code]++
	}
	for _, code := range sortedKeys(codes) {
		fmt.Fprintf(tw, "    %s\t%d\t(%s)\n", code, codes[code], dlq.Subject(cfg.DLQSubjectPrefix, code))
	}
	fmt.Fprintln(tw, "\nfollowed sites, as the Graph simulator holds them")
	for _, u := range sim.Users() {
		var names []string
		for _, id := range sim.Followed(u) {
			names = append(names, siteName(id))
		}
		fmt.Fprintf(tw, "  %s\t%s\n", u, strings.Join(names, ", "))
	}
	if len(letters) > 0 {
		fmt.Fprintln(tw, "\ndead letters")
		for _, d := range letters {
			what := d.SiteID
			if what == "" {
				what = "(whole event)"
			} else {
				what = siteName(what)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", d.Error.Code, cmp.Or(d.UserID, "(no user)"), what, d.Error.Message)
		}
	}
	return tw.Flush()
}

func siteName(id string) string {
	for known, n := range demoSites {
		if strings.EqualFold(known, id) {
			return n
		}
	}
	return id
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	return info, nil
}
