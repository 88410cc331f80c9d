package config

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
)

// Streams names what the dead-letter tool works on: the request stream
// replays are published into and the dead-letter stream, as the consumer
// is configured to use them.
type Streams struct {
	// Stream is the request stream (SITEFOLLOW_STREAM).
	Stream string
	// DLQStream is the dead-letter stream (SITEFOLLOW_DLQ_STREAM).
	DLQStream string
}

// BindStreams registers the stream settings' flags (--stream,
// --dlq-stream) on fs, like BindNATS: once fs is parsed, the function it
// returns resolves them (flag > environment > default) and validates them,
// reading no other setting.
func BindStreams(fs *flag.FlagSet, getenv func(string) string) func() (Streams, error) {
	resolve := bindSome(fs, getenv, func(s *spec) bool { return s.Flag == "stream" || s.Flag == "dlq-stream" })
	return func() (Streams, error) {
		c, err := resolve()
		if err != nil {
			return Streams{}, fmt.Errorf("stream settings: %w", err)
		}
		if c.Stream == c.DLQStream {
			return Streams{}, fmt.Errorf("stream settings: %w", &SettingError{Setting: "--dlq-stream", Value: strconv.Quote(c.DLQStream),
				Err: errors.New("must differ from --stream")})
		}
		return Streams{Stream: c.Stream, DLQStream: c.DLQStream}, nil
	}
}

// bindSome registers the flags of the settings keep selects on fs and
// returns how to resolve and validate just those once fs is parsed.
func bindSome(fs *flag.FlagSet, getenv func(string) string, keep func(*spec) bool) func() (Config, error) {
	var specs []spec
	for _, s := range table() {
		if keep(&s) {
			specs = append(specs, s)
		}
	}
	fromFlag := make(map[string]string)
	for i := range specs {
		fs.Var(rawFlag{raw: fromFlag, name: specs[i].Flag, isBool: specs[i].isBool}, specs[i].Flag, specs[i].Description)
	}
	return func() (Config, error) {
		var c Config
		var errs []error
		for i := range specs {
			s := &specs[i]
			raw, name := s.Default, s.name()
			if v, ok := fromFlag[s.Flag]; ok {
				raw = v
			} else if v := getenv(s.Env); v != "" {
				raw, name = v, s.Env
			}
			if err := s.set(&c, raw); err != nil {
				errs = append(errs, &SettingError{Setting: name, Value: s.quoteRaw(raw), Err: err})
				continue
			}
			if err := s.check(&c); err != nil {
				errs = append(errs, &SettingError{Setting: name, Value: s.shown(&c), Err: err})
			}
		}
		return c, errors.Join(errs...)
	}
}
