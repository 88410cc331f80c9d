package config

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// NATS is how to reach the NATS server: the settings every subcommand that
// connects (run, dlq, send) shares, and the only ones dlq and send need.
type NATS struct {
	URL       string
	CredsFile string
}

// NATS returns c's NATS connection settings.
func (c Config) NATS() NATS { return NATS{URL: c.NATSURL, CredsFile: c.NATSCredsFile} }

// isNATS says whether a setting is a NATS connection setting: those read
// from the nats CLI's own environment variables.
func (s *spec) isNATS() bool { return strings.HasPrefix(s.Env, "NATS_") }

// BindNATS registers the NATS connection settings' flags on fs, for a
// subcommand with flags of its own. Once fs is parsed, the function it
// returns resolves each setting (flag > environment > default) and
// validates them; it reads nothing else, so a tool needs no Azure settings.
func BindNATS(fs *flag.FlagSet, getenv func(string) string) func() (NATS, error) {
	var specs []spec
	for _, s := range table() {
		if s.isNATS() {
			specs = append(specs, s)
		}
	}
	fromFlag := make(map[string]string)
	for i := range specs {
		fs.Var(rawFlag{raw: fromFlag, name: specs[i].Flag, isBool: specs[i].isBool}, specs[i].Flag, specs[i].Description)
	}
	return func() (NATS, error) {
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
		if err := errors.Join(errs...); err != nil {
			return NATS{}, fmt.Errorf("nats settings: %w", err)
		}
		return c.NATS(), nil
	}
}
