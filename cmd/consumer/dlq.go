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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/dlq"
)

const dlqUsage = `usage: consumer dlq <action> [flags]

actions:
  list     list dead letters: a table and a count per code, or --json (one object per line)
  show     show one dead letter whole: consumer dlq show SEQ [--json]
  replay   republish dead letters as one-site requests on sitefollow.requests.replay, then
           delete them (--dry-run, --yes, --max-replays N, --force)
  purge    delete dead letters (--older-than D, --yes)

Filters (list, replay, purge; all given must match): --code C, --user U, --site S,
--since AGE, --older-than AGE, --seq A-B. Connection: the NATS settings of consumer run
(--nats-url or NATS_URL, ...), --stream and --dlq-stream (SITEFOLLOW_STREAM, SITEFOLLOW_DLQ_STREAM).
consumer dlq <action> --help lists an action's flags.
`

// dlqCommand is `consumer dlq`: the operators' dead-letter tool. It needs
// only the NATS and stream settings, never the Azure ones.
func dlqCommand(ctx context.Context, args []string, getenv func(string) string, con console) error {
	if len(args) == 0 {
		fmt.Fprint(con.err, dlqUsage)
		return errors.New("dlq: missing action (list, show, replay or purge)")
	}
	switch args[0] {
	case "list":
		return dlqList(ctx, args[1:], getenv, con)
	case "show":
		return dlqShow(ctx, args[1:], getenv, con)
	case "replay":
		return dlqReplay(ctx, args[1:], getenv, con)
	case "purge":
		return dlqPurge(ctx, args[1:], getenv, con)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(con.out, dlqUsage)
		return flag.ErrHelp
	}
	fmt.Fprint(con.err, dlqUsage)
	return fmt.Errorf("dlq: unknown action %q", dlq.Printable(args[0], 64))
}

// dlqFlags are the flags the dlq actions share.
type dlqFlags struct {
	fs                                       *flag.FlagSet
	nats                                     func() (config.NATS, error)
	streams                                  func() (config.Streams, error)
	code, user, site, since, olderThan, seqs string
	limit                                    int
	json                                     bool
}

func newDLQFlags(action, synopsis string, getenv func(string) string) *dlqFlags {
	f := &dlqFlags{fs: flag.NewFlagSet("dlq "+action, flag.ContinueOnError)}
	f.fs.Usage = func() {
		fmt.Fprintf(f.fs.Output(), "usage: consumer dlq %s %s\n\nflags:\n", action, synopsis)
		f.fs.PrintDefaults()
	}
	f.nats = config.BindNATS(f.fs, getenv)
	f.streams = config.BindStreams(f.fs, getenv)
	if action == "show" {
		f.fs.BoolVar(&f.json, "json", false, "print the record as JSON")
		return f
	}
	f.fs.StringVar(&f.code, "code", "", "only dead letters with this error code (case-insensitive)")
	f.fs.StringVar(&f.user, "user", "", "only dead letters of this userId (case-insensitive)")
	f.fs.StringVar(&f.site, "site", "", "only dead letters of this siteId (case-insensitive)")
	f.fs.StringVar(&f.since, "since", "", "only dead letters stored within this age, e.g. 2h or 7d")
	f.fs.StringVar(&f.olderThan, "older-than", "", "only dead letters stored longer ago than this age, e.g. 30d")
	f.fs.StringVar(&f.seqs, "seq", "", "only dead letters with stream sequence in A-B (inclusive; A-A or A for one)")
	f.fs.IntVar(&f.limit, "limit", 0, "at most this many dead letters (0: no limit)")
	if action == "list" {
		f.fs.BoolVar(&f.json, "json", false, "print one JSON object per line instead of a table")
	}
	return f
}

// parse parses args: --help goes to stdout (flag.ErrHelp), a mistake to
// stderr with the usage.
func (f *dlqFlags) parse(args []string, con console) error {
	f.fs.SetOutput(io.Discard)
	err := f.fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		f.fs.SetOutput(con.out)
		f.fs.Usage()
		return flag.ErrHelp
	case err != nil:
		f.fs.SetOutput(con.err)
		f.fs.Usage()
		return fmt.Errorf("%s: %w", f.fs.Name(), err)
	}
	return nil
}

// filter builds the dlq.Filter the flags ask for, now being now.
func (f *dlqFlags) filter(now time.Time) (dlq.Filter, error) {
	flt := dlq.Filter{Code: f.code, User: f.user, Site: f.site}
	var errs []error
	if f.since != "" {
		d, err := dlq.ParseAge(f.since)
		if err != nil {
			errs = append(errs, fmt.Errorf("--since: %w", err))
		}
		flt.After = now.Add(-d)
	}
	if f.olderThan != "" {
		d, err := dlq.ParseAge(f.olderThan)
		if err != nil {
			errs = append(errs, fmt.Errorf("--older-than: %w", err))
		}
		flt.Before = now.Add(-d)
	}
	if f.seqs != "" {
		a, b, err := dlq.ParseSeqRange(f.seqs)
		if err != nil {
			errs = append(errs, fmt.Errorf("--seq: %w", err))
		}
		flt.FirstSeq, flt.LastSeq = a, b
	}
	if f.limit < 0 {
		errs = append(errs, errors.New("--limit: must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return dlq.Filter{}, fmt.Errorf("%s: %w", f.fs.Name(), err)
	}
	return flt, nil
}

// dlqConn is an open connection to the dead-letter stream.
type dlqConn struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	store   *dlq.Store
	streams config.Streams
}

// connectTimeout bounds connecting and opening the stream.
const connectTimeout = 15 * time.Second

func (f *dlqFlags) connect(ctx context.Context) (*dlqConn, error) {
	n, nerr := f.nats()
	streams, serr := f.streams()
	if err := errors.Join(nerr, serr); err != nil {
		return nil, fmt.Errorf("%s: %w", f.fs.Name(), err)
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	nc, err := dialNATS(cctx, n, "sitefollow "+f.fs.Name())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.fs.Name(), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", f.fs.Name(), err)
	}
	store, err := dlq.Open(cctx, js, streams.DLQStream)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", f.fs.Name(), err)
	}
	return &dlqConn{nc: nc, js: js, store: store, streams: streams}, nil
}

// selectRecords reads the records flt selects, at most limit (0: all).
func selectRecords(ctx context.Context, store *dlq.Store, flt dlq.Filter, limit int) ([]dlq.Record, error) {
	var recs []dlq.Record
	errEnough := errors.New("enough")
	err := store.Scan(ctx, flt, func(r dlq.Record) error {
		recs = append(recs, r)
		if limit > 0 && len(recs) >= limit {
			return errEnough
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return recs, err
	}
	return recs, nil
}

// seqList is recs' sequences for a message, at most a dozen shown.
func seqList(recs []dlq.Record) string {
	var b strings.Builder
	for i, r := range recs {
		if i == 12 {
			fmt.Fprintf(&b, " and %d more", len(recs)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.FormatUint(r.Seq, 10))
	}
	return b.String()
}

// plural is "n word" or "n words".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}
