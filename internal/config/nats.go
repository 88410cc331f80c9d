package config

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
)

// NATS is how to reach the NATS server: the settings every subcommand that
// connects (run, dlq, send) shares, and the only ones dlq and send need.
// Empty fields were not given. URL is never empty: when URLDefaulted it is
// the default, which a context's URL replaces.
type NATS struct {
	URL          string
	URLDefaulted bool
	// Context names the nats CLI context to use; empty uses the one the
	// nats CLI has selected, if any, in ConfigDir.
	Context string
	// ConfigDir holds the nats CLI's contexts (under nats/context); empty
	// when neither XDG_CONFIG_HOME nor HOME is set, and then no context is
	// read.
	ConfigDir string
	User      string
	Password  string
	Token     string
	CredsFile string
	NKeyFile  string
	CAFile    string
	CertFile  string
	KeyFile   string
}

// NATS returns c's NATS connection settings.
func (c Config) NATS() NATS {
	return NATS{
		URL: c.NATSURL, URLDefaulted: c.NATSURLDefaulted, Context: c.NATSContext, ConfigDir: c.NATSConfigDir,
		User: c.NATSUser, Password: c.NATSPassword, Token: c.NATSToken,
		CredsFile: c.NATSCredsFile, NKeyFile: c.NATSNKeyFile,
		CAFile: c.NATSCAFile, CertFile: c.NATSCertFile, KeyFile: c.NATSKeyFile,
	}
}

// String keeps %v of NATS settings from printing the password or token.
func (n NATS) String() string {
	if n.Password != "" {
		n.Password = "[redacted]"
	}
	if n.Token != "" {
		n.Token = "[redacted]"
	}
	n.URL = redactURLs(n.URL)
	type plain NATS // without this method
	return fmt.Sprintf("%+v", plain(n))
}

// GoString keeps %#v from printing the password or token.
func (n NATS) GoString() string { return n.String() }

// natsConfigDir is where the nats CLI keeps its configuration, as it
// finds it: $XDG_CONFIG_HOME, else $HOME/.config.
func natsConfigDir(getenv func(string) string) string {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return d
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config")
	}
	return ""
}

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
		c := Config{NATSConfigDir: natsConfigDir(getenv)}
		var errs []error
		source := make(map[string]string, len(specs))
		byKey := make(map[string]*spec, len(specs))
		for i := range specs {
			s := &specs[i]
			raw, name, given := s.lookup(fromFlag, getenv)
			source[s.key()], byKey[s.key()] = name, s
			if err := s.set(&c, raw); err != nil {
				errs = append(errs, &SettingError{Setting: name, Value: s.quoteRaw(raw), Err: err})
				continue
			}
			if !given && s.defaulted != nil {
				s.defaulted(&c)
			}
			if err := s.check(&c); err != nil {
				errs = append(errs, &SettingError{Setting: name, Value: s.shown(&c), Err: err})
			}
		}
		nameOf := func(key string) string { return source[key] }
		for _, x := range relations() {
			s, ok := byKey[x.key]
			if !ok {
				continue // not a NATS setting
			}
			if err := x.check(&c, nameOf); err != nil {
				errs = append(errs, &SettingError{Setting: source[x.key], Value: s.shown(&c), Err: err})
			}
		}
		if err := errors.Join(errs...); err != nil {
			return NATS{}, fmt.Errorf("nats settings: %w", err)
		}
		return c.NATS(), nil
	}
}
