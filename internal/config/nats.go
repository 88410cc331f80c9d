package config

import (
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
	nats := bindFlags(fs, (*spec).isNATS)
	return func() (NATS, error) {
		c, err := nats.resolve(getenv)
		if err != nil {
			return NATS{}, fmt.Errorf("nats settings: %w", err)
		}
		return c.NATS(), nil
	}
}

// NATSEnv names the environment variables of the NATS connection settings
// and XDG_CONFIG_HOME, where the nats CLI's contexts are found: what a
// process pointed at an embedded server (the demo, the benchmark's
// consumers) overrides so that nothing of the caller's own NATS set-up
// (an exported NATS_CONTEXT, a selected context, credentials) leaks in.
func NATSEnv() []string {
	names := []string{"XDG_CONFIG_HOME"}
	for _, s := range table() {
		if s.isNATS() {
			names = append(names, s.Env)
		}
	}
	return names
}
