package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/producer"
)

// sendUsage heads `consumer send --help`; the flags follow.
const sendUsage = `usage: consumer send --user U (--follow SITE... | --unfollow SITE...) [--source app] [--id ID] [flags]

Publishes one follow or unfollow request through JetStream, as a producer
should: the request is checked by the consumer's own decoder and by
schemas/follow-request.v1.schema.json, published to
sitefollow.requests.<source> with a Nats-Msg-Id (--id, or derived from the
request so that sending the same request twice is dropped as a duplicate
within the request stream's duplicate window), and the stream's
acknowledgement is printed. Several sites may follow one --follow or
--unfollow (--follow S1 S2), or the flag may repeat (--follow S1 --follow S2).
A site is a site id (hostname,siteGuid,webGuid) or a site URL
(https://contoso.sharepoint.com/sites/Finance), which goes in siteUrls.
Only the NATS settings are read; no Azure ones are needed.

flags:
`

// sendCommand is `consumer send`.
func sendCommand(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	// Parse errors are returned (and printed once by main); help goes to stdout.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	user := fs.String("user", "", "the `USER`: an Entra object id or a user principal name (required)")
	var follow, unfollow siteList
	fs.Var(&follow, "follow", "`SITE` id or URL to follow; more may follow the flag, or repeat it")
	fs.Var(&unfollow, "unfollow", "`SITE` id or URL to unfollow; more may follow the flag, or repeat it")
	source := fs.String("source", "app", "the producing system: the subject's last token (letters, digits, - and _)")
	id := fs.String("id", "", "the request's `ID` and Nats-Msg-Id (default derived from the request's content)")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on connecting and on waiting for the stream's acknowledgement")
	resolveNATS := config.BindNATS(fs, getenv)

	if err := parseSites(fs, args, map[string]*siteList{"follow": &follow, "unfollow": &unfollow}); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, sendUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return err
		}
		return fmt.Errorf("send: %w", err)
	}
	req, subject, msgID, err := sendRequest(*user, follow, unfollow, *source, *id)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	n, err := resolveNATS()
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	enc, err := producer.NewEncoder()
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	body, err := enc.Encode(req)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if msgID == "" {
		msgID = producer.MsgID(body)
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	nc, err := dialNATS(ctx, n, "sitefollow send")
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	ack, err := producer.Publish(ctx, js, subject, body, msgID)
	if errors.Is(err, producer.ErrNoStream) {
		return fmt.Errorf("send: %w on %s: the streams may not exist yet (no stream captures the subject); start `consumer run` against this server once (it creates them unless SITEFOLLOW_PROVISION=false), then send again",
			err, nc.ConnectedUrlRedacted())
	}
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if ack.Duplicate {
		fmt.Fprintf(stdout, "duplicate: stream %s already holds this request (sequence %d, Nats-Msg-Id %s) and dropped it; within the duplicate window pass a new --id to send it again on purpose\n",
			ack.Stream, ack.Sequence, msgID)
		return nil
	}
	fmt.Fprintf(stdout, "published %s %s for %s: stream %s sequence %d (subject %s, Nats-Msg-Id %s)\n",
		req.Action, siteCount(len(req.SiteIDs)+len(req.SiteURLs)), req.UserID, ack.Stream, ack.Sequence, subject, msgID)
	return nil
}

// sendRequest checks the command line's own rules (one action, a source
// that is a subject token, a header-safe id) and assembles the request; the
// request's fields are checked when it is encoded.
func sendRequest(user string, follow, unfollow siteList, source, id string) (event.Request, string, string, error) {
	var errs []error
	if user == "" {
		errs = append(errs, errors.New("--user is required"))
	}
	action, sites := event.Follow, []string(follow)
	switch {
	case len(follow) > 0 && len(unfollow) > 0:
		errs = append(errs, errors.New("give --follow or --unfollow, not both: one request carries one action"))
	case len(follow) == 0 && len(unfollow) == 0:
		errs = append(errs, errors.New("give --follow SITE... or --unfollow SITE..."))
	case len(unfollow) > 0:
		action, sites = event.Unfollow, unfollow
	}
	subject, err := producer.Subject(source)
	if err != nil {
		errs = append(errs, fmt.Errorf("--source: %w", err))
	}
	if err := headerSafe(id); err != nil {
		errs = append(errs, fmt.Errorf("--id: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return event.Request{}, "", "", err
	}
	req := event.Request{UserID: user, Action: action, ID: id, Source: source}
	for _, site := range sites {
		// A site id holds no "/", so anything that starts like a URL is one.
		if strings.HasPrefix(strings.ToLower(site), "http") && strings.Contains(site, "://") {
			req.SiteURLs = append(req.SiteURLs, site)
			continue
		}
		req.SiteIDs = append(req.SiteIDs, site)
	}
	return req, subject, id, nil
}

// headerSafe refuses what cannot travel in a NATS header value: a
// Nats-Msg-Id with a space or control character would be cut or corrupt
// the message's headers.
func headerSafe(id string) error {
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("%s: no spaces or control characters (byte %d)", strconv.QuoteToASCII(bound(id, 64)), i)
		}
	}
	return nil
}

// bound cuts s to at most n bytes for messages.
func bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func siteCount(n int) string {
	if n == 1 {
		return "1 site"
	}
	return strconv.Itoa(n) + " sites"
}

// siteList is a flag that may repeat, each time adding one site.
type siteList []string

func (l *siteList) String() string { return strings.Join(*l, " ") }

// Set adds one site. A value starting with "-" is refused: it is the next
// flag, and the site was left out ("--follow --user U").
func (l *siteList) Set(v string) error {
	if strings.HasPrefix(v, "-") {
		return fmt.Errorf("want a site id, got %s", strconv.QuoteToASCII(bound(v, 64)))
	}
	*l = append(*l, v)
	return nil
}

// parseSites parses args with fs, letting the arguments after a list flag
// (up to the next flag) join that list: "--follow S1 S2" is "--follow S1
// --follow S2". The flag package stops at the first argument that is not a
// flag; each time it does, the arguments that follow are added to the list
// flag parsed last, if the last flag parsed was one, and parsing resumes.
// Any other stray argument is an error.
func parseSites(fs *flag.FlagSet, args []string, lists map[string]*siteList) error {
	last := ""
	fs.VisitAll(func(f *flag.Flag) { f.Value = &lastSet{Value: f.Value, name: f.Name, last: &last} })
	// Unwrapped again afterwards, so that PrintDefaults shows each flag's
	// own type and default.
	defer fs.VisitAll(func(f *flag.Flag) { f.Value = f.Value.(*lastSet).Value })
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return nil
		}
		// fs.Args is a suffix of args: a "--" just before it ended the
		// flags, and a "-" (which the flag package takes for an argument)
		// is refused here rather than parsed again for ever.
		used := len(args) - len(rest)
		list, ok := lists[last]
		if !ok || used == 0 || args[used-1] == "--" || strings.HasPrefix(rest[0], "-") {
			return fmt.Errorf("unexpected argument %s", strconv.QuoteToASCII(bound(rest[0], 64)))
		}
		for len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			*list = append(*list, rest[0])
			rest = rest[1:]
		}
		args = rest
	}
}

// lastSet wraps a flag's Value to record which flag was set last.
type lastSet struct {
	flag.Value
	name string
	last *string
}

func (s *lastSet) Set(v string) error {
	*s.last = s.name
	return s.Value.Set(v)
}

// IsBoolFlag keeps boolean flags usable without a value once wrapped.
func (s *lastSet) IsBoolFlag() bool {
	b, ok := s.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
