// Command consumer is sitefollow's entry point: it keeps Microsoft 365 users
// following the right SharePoint sites by turning follow/unfollow request
// events from NATS JetStream into batched Microsoft Graph calls.
//
// Subcommands: run (the service), demo (everything embedded, one command),
// bench (the benchmark), send (publish one request), sim (the Graph
// simulator alone), version. main only wires signals to a context; run does
// the rest.
package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

// version and commit are set at build time with -ldflags "-X
// main.version=... -X main.commit=..."; without a commit the one the Go
// toolchain recorded is shown, when it recorded one.
var (
	version = "dev"
	commit  = ""
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "consumer:", err)
		}
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 1
}

// run dispatches a subcommand. It is main without the process: tests call it.
func run(ctx context.Context, args []string, getenv func(string) string) error {
	return dispatch(ctx, args, getenv, os.Stdout, os.Stderr)
}

func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errors.New("missing subcommand")
	}
	switch args[0] {
	case "run":
		return serveCommand(ctx, args[1:], getenv, stdout, stderr)
	case "demo":
		return demoCommand(ctx, args[1:], getenv, stdout, stderr)
	case "bench":
		return benchCommand(ctx, args[1:], stdout, stderr)
	case "dlq":
		return dlqCommand(ctx, args[1:], getenv, newConsole(os.Stdin, stdout, stderr))
	case "send":
		return sendCommand(ctx, args[1:], getenv, stdout)
	case "sim":
		return simCommand(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionLine())
		return nil
	case "help", "-h", "--help":
		usage(stdout)
		return nil
	default:
		usage(stderr)
		return fmt.Errorf("unknown subcommand %q", args[0])
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: consumer <subcommand> [flags]

subcommands:
  run       consume follow/unfollow requests and apply them through Microsoft Graph
            (consumer run --help lists every setting, its environment variable and default)
  demo      run the whole pipeline against an embedded NATS server and a Graph simulator
  bench     measure the consumer against JetStream's ceiling, a naive consumer, the Graph
            throttle limit, latency and memory bounds, and with 1-3 replicas (see README,
            Performance); --short for CI
  dlq       inspect, replay and purge dead letters: consumer dlq list|show|replay|purge
            (consumer dlq --help; needs only the NATS settings)
  send      publish one follow/unfollow request through JetStream, validated as the consumer
            validates it (consumer send --help)
  sim       serve the Graph and Entra simulator on loopback for trying run by hand, and print
            the environment to export (consumer sim --help)
  version   print the version, the commit it was built from and the Go version (also --version)

consumer <subcommand> --help describes each.
`)
}

// parseFlags parses args into fs: help (-h, --help) goes to stdout and
// returns flag.ErrHelp, a mistake goes to stderr with the usage.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		_, werr := stdout.Write(buf.Bytes())
		return errors.Join(err, werr)
	case err != nil:
		_, werr := stderr.Write(buf.Bytes())
		return errors.Join(err, werr)
	}
	return nil
}

// versionLine names the build: the version set at build time, the commit
// and whether the tree had changes (as the Go toolchain records them), and
// the Go version.
func versionLine() string {
	built := cmp.Or(commit, "unknown")
	if info, ok := debug.ReadBuildInfo(); ok && commit == "" {
		var rev, modified string
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			built = rev[:min(len(rev), 12)]
			if modified == "true" {
				built += "+changes"
			}
		}
	}
	return fmt.Sprintf("sitefollow %s (commit %s, %s %s/%s)", version, built, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
