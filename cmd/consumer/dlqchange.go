package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sitefollow/sitefollow/internal/dlq"
)

func dlqReplay(ctx context.Context, args []string, getenv func(string) string, con console) error {
	f := newDLQFlags("replay", "[filters] [--seq A-B] [--dry-run] [--yes] [--max-replays N] [--force]", getenv)
	dryRun := f.fs.Bool("dry-run", false, "show what would be replayed and change nothing (also with --yes)")
	yes := f.fs.Bool("yes", false, "replay without asking (needed when stdin or stdout is not a terminal)")
	maxReplays := f.fs.Int("max-replays", dlq.DefaultMaxReplays, "refuse dead letters already replayed this many times")
	force := f.fs.Bool("force", false, "replay dead letters even at --max-replays")
	if err := f.parse(args, con); err != nil {
		return err
	}
	flt, err := f.filter(time.Now())
	if err != nil {
		return err
	}
	if *maxReplays < 1 {
		return errors.New("dlq replay: --max-replays: must be at least 1")
	}
	c, err := f.connect(ctx)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	recs, err := selectRecords(ctx, c.store, flt, f.limit)
	if err != nil {
		return fmt.Errorf("dlq replay: %w", err)
	}
	r, err := dlq.NewReplayer(c.store, c.js, c.streams.Stream, dlq.ReplaySubject)
	if err != nil {
		return fmt.Errorf("dlq replay: %w", err)
	}
	plan := dlq.PlanReplay(recs, *maxReplays, *force)
	skipped := fmt.Sprintf("%d invalidEvent skipped, %d refused at --max-replays %d, %d unreplayable",
		len(plan.Invalid), len(plan.Capped), *maxReplays, len(plan.Unreplayable))
	if len(plan.Capped) > 0 {
		fmt.Fprintf(con.err, "dlq replay: refused, already replayed %d times or more (--force replays them): %s\n", *maxReplays, seqList(plan.Capped))
	}
	if len(plan.Unreplayable) > 0 {
		fmt.Fprintf(con.err, "dlq replay: unreplayable (consumer dlq show SEQ says why): %s\n", seqList(plan.Unreplayable))
	}
	if *dryRun {
		if err := printReplayPlan(con, r, plan.Replay); err != nil {
			return err
		}
		fmt.Fprintf(con.out, "dlq replay: dry run, nothing changed: would replay %s to %s; %s\n",
			plural(len(plan.Replay), "dead letter"), dlq.ReplaySubject, skipped)
		return nil
	}
	if len(plan.Replay) == 0 {
		fmt.Fprintf(con.out, "dlq replay: nothing to replay of %s selected; %s\n", plural(len(recs), "dead letter"), skipped)
		return nil
	}
	if !*yes {
		q := fmt.Sprintf("Replay %s from %s to %s and delete them?", plural(len(plan.Replay), "dead letter"), c.store.Name(), dlq.ReplaySubject)
		if err := con.confirm("dlq replay", q); err != nil {
			return err
		}
	}
	m := con.meter("replay", len(plan.Replay))
	dups := 0
	done, err := r.ReplayAll(ctx, plan.Replay, func(_ dlq.Record, dup bool) {
		if dup {
			dups++
		}
		m.add()
	})
	m.finish()
	earlier := ""
	if dups > 0 {
		earlier = fmt.Sprintf(" (%d published by an earlier run, now deleted)", dups)
	}
	fmt.Fprintf(con.out, "dlq replay: replayed %d of %d to %s%s; %s\n", done, len(plan.Replay), dlq.ReplaySubject, earlier, skipped)
	if err != nil {
		return fmt.Errorf("dlq replay: stopped after %d of %d; every other dead letter is still in %s (run again to go on): %w",
			done, len(plan.Replay), c.store.Name(), err)
	}
	return nil
}

// printReplayPlan lists what a replay would publish.
func printReplayPlan(con console, r *dlq.Replayer, recs []dlq.Record) error {
	if len(recs) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(con.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tUSER\tACTION\tSITE\tREPLAY-COUNT\tNATS-MSG-ID")
	for _, rec := range recs {
		msg, err := r.Message(rec)
		if err != nil {
			return fmt.Errorf("dlq replay: %w", err)
		}
		d := rec.Letter
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", rec.Seq, dlq.Printable(d.UserID, cellBytes), d.Action,
			dlq.Printable(d.SiteID, cellBytes), msg.Header.Get(dlq.HeaderReplayCount), msg.Header.Get("Nats-Msg-Id"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("dlq replay: %w", err)
	}
	return nil
}

func dlqPurge(ctx context.Context, args []string, getenv func(string) string, con console) error {
	f := newDLQFlags("purge", "[filters] [--older-than D] [--yes]", getenv)
	yes := f.fs.Bool("yes", false, "delete without asking (needed when stdin or stdout is not a terminal)")
	dryRun := f.fs.Bool("dry-run", false, "count what would be deleted and change nothing")
	if err := f.parse(args, con); err != nil {
		return err
	}
	flt, err := f.filter(time.Now())
	if err != nil {
		return err
	}
	c, err := f.connect(ctx)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	recs, err := selectRecords(ctx, c.store, flt, f.limit)
	if err != nil {
		return fmt.Errorf("dlq purge: %w", err)
	}
	if *dryRun || len(recs) == 0 {
		what := "nothing to purge"
		if *dryRun {
			what = "dry run, nothing changed: would delete " + plural(len(recs), "dead letter")
		}
		fmt.Fprintf(con.out, "dlq purge: %s in %s\n", what, c.store.Name())
		return nil
	}
	if !*yes {
		scope := "matching"
		if flt == (dlq.Filter{}) {
			scope = "(all of them)"
		}
		q := fmt.Sprintf("Delete %s %s from %s? This cannot be undone.", plural(len(recs), "dead letter"), scope, c.store.Name())
		if err := con.confirm("dlq purge", strings.ReplaceAll(q, "  ", " ")); err != nil {
			return err
		}
	}
	m := con.meter("purge", len(recs))
	done, err := c.store.Purge(ctx, recs, func(dlq.Record) { m.add() })
	m.finish()
	fmt.Fprintf(con.out, "dlq purge: deleted %d of %d from %s\n", done, len(recs), c.store.Name())
	if err != nil {
		return fmt.Errorf("dlq purge: stopped after %d of %d: %w", done, len(recs), err)
	}
	return nil
}
