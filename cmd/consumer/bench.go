package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sitefollow/sitefollow/internal/bench"
	"github.com/sitefollow/sitefollow/internal/config"
)

// benchCommand is `consumer bench`: it runs the benchmark scenarios against
// this very binary started as `run` in a child process, prints the table and
// optionally writes it as JSON. It fails when a scenario could not finish
// or, outside --short, when a target is missed.
func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: consumer bench [flags]\n\n"+
			"Runs the benchmark scenarios (%s), each against a fresh embedded NATS server,\n"+
			"a fresh Graph simulator and this binary's `run` in a child process (throughput also\n"+
			"runs it in this process, beside the ceiling's consumer; scaleout and sharedbudget run up\n"+
			"to three child processes sharing the durable consumer). The consumer\n"+
			"under test takes any other setting from the SITEFOLLOW_* environment, as `run` does.\n\nflags:\n",
			strings.Join(bench.Names(), ", "))
		fs.PrintDefaults()
	}
	short := fs.Bool("short", false, "tiny counts, to prove the harness works (targets are shown but do not fail the run)")
	only := fs.String("scenarios", "", "comma-separated scenarios to run (default all)")
	jsonFile := fs.String("json", "", "also write the results as JSON to this file")
	workDir := fs.String("work-dir", "", "directory for NATS stores and consumer logs (default a temporary directory, removed afterwards)")
	timeout := fs.Duration("timeout", bench.DefaultTimeout, "bound on each scenario part")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	var names []string
	if *only != "" {
		names = strings.Split(*only, ",")
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	dir := *workDir
	if dir == "" {
		dir, err = os.MkdirTemp("", "sitefollow-bench-")
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer removeAll(stderr, dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}

	rep, runErr := bench.Run(ctx, bench.Options{
		Short: *short, Scenarios: names, WorkDir: dir, Timeout: *timeout,
		Exe: exe, Env: os.Environ(), Progress: stderr,
		Serve: func(ctx context.Context, cfg config.Config, logs io.Writer) error {
			log, err := config.NewLogger(cfg, logs)
			if err != nil {
				return err
			}
			return serve(ctx, cfg, log, nil)
		},
	})
	if rep == nil {
		return runErr
	}
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	if *jsonFile != "" {
		if err := rep.WriteJSON(*jsonFile); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	if runErr != nil {
		return runErr
	}
	var problems []string
	for _, e := range rep.Errors {
		problems = append(problems, e.Scenario+" did not finish")
	}
	if !*short {
		for _, row := range rep.Failed() {
			problems = append(problems, row.Scenario+" "+row.Metric)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("bench: %w: %s", errBenchFailed, strings.Join(problems, "; "))
	}
	return nil
}

// errBenchFailed reports a benchmark run with missed targets or unfinished
// scenarios.
var errBenchFailed = errors.New("benchmark failed")
