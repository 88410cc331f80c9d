// Package natsconn connects to NATS the way the nats CLI does: from a saved
// nats CLI context, with the settings given explicitly on top, and it names
// the server and the cause when a connection fails (unreachable, TLS
// verification, authorization, no JetStream).
//
// It does not read the environment: the caller hands it Settings, including
// the directory that holds the nats CLI's contexts.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/nats-io/jsm.go/natscontext"
	"github.com/nats-io/nats.go"
)

// DefaultURL is dialled when neither Settings.URL nor a context names a
// server.
const DefaultURL = nats.DefaultURL

// Settings say how to connect. Empty fields were not given; what is given
// wins over the context's value.
type Settings struct {
	// URL lists the servers, comma-separated; empty takes the context's,
	// else DefaultURL.
	URL string
	// Context names a nats CLI context; empty uses the context the nats CLI
	// has selected in ConfigDir, if any.
	Context string
	// ConfigDir holds the nats CLI's configuration (contexts under
	// nats/context, the selected one in nats/context.txt); empty reads no
	// context, and then naming one is an error.
	ConfigDir string
	User      string
	Password  string
	Token     string
	CredsFile string
	// NKeyFile is a file holding a user nkey seed.
	NKeyFile string
	CAFile   string
	CertFile string
	KeyFile  string
}

// hasAuth says whether any credential was given, which then replaces all
// of the context's.
func (s Settings) hasAuth() bool {
	return s.User != "" || s.Password != "" || s.Token != "" || s.CredsFile != "" || s.NKeyFile != ""
}

// Target is where and how to connect: the servers and the client options
// resolved from Settings.
type Target struct {
	// URL lists the servers as given, credentials included; show Servers
	// instead.
	URL string
	// Context is the name of the context used, empty when none was.
	Context string
	opts    []nats.Option
}

// ContextError says a nats CLI context could not be used: it does not
// exist, or it cannot be read or turned into connection options.
type ContextError struct {
	Name string
	Err  error
}

func (e *ContextError) Error() string {
	return fmt.Sprintf("nats context %q: %v", e.Name, e.Err)
}

// Unwrap returns the cause, natscontext.ErrNotFound for a missing context.
func (e *ContextError) Unwrap() error { return e.Err }

// Resolve loads the context, if any, and builds the options. A context that
// is named (or selected) but missing is an error naming it, never ignored.
func Resolve(ctx context.Context, s Settings) (Target, error) {
	nctx, err := loadContext(ctx, s)
	if err != nil {
		return Target{}, err
	}
	t := Target{URL: s.URL}
	if nctx != nil {
		t.Context = nctx.Name
		opts, err := nctx.NATSOptions()
		if err != nil {
			return Target{}, &ContextError{Name: nctx.Name, Err: err}
		}
		t.opts = opts
		if t.URL == "" {
			t.URL = nctx.ServerURL()
		}
	}
	if t.URL == "" {
		t.URL = DefaultURL
	}
	explicit, err := s.options()
	if err != nil {
		return Target{}, err
	}
	t.opts = append(t.opts, explicit...)
	return t, nil
}

func loadContext(ctx context.Context, s Settings) (*natscontext.Context, error) {
	if s.ConfigDir == "" {
		if s.Context != "" {
			return nil, &ContextError{Name: s.Context, Err: errors.New("no nats configuration directory to read it from (XDG_CONFIG_HOME and HOME are unset)")}
		}
		return nil, nil
	}
	reg := natscontext.NewRegistry(natscontext.NewFileBackendAt(s.ConfigDir))
	name := s.Context
	if name == "" {
		selected, err := reg.Selected(ctx)
		if errors.Is(err, natscontext.ErrNoneSelected) || (err == nil && selected == "") {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("selected nats context: %w", err)
		}
		name = selected
	}
	c, err := reg.Load(ctx, name)
	if errors.Is(err, natscontext.ErrNotFound) {
		return nil, &ContextError{Name: name, Err: fmt.Errorf("%w: no %s",
			natscontext.ErrNotFound, filepath.Join(s.ConfigDir, "nats", "context", name+".json"))}
	}
	if err != nil {
		return nil, &ContextError{Name: name, Err: err}
	}
	return c, nil
}

// options are the client options for what was given explicitly.
func (s Settings) options() ([]nats.Option, error) {
	var opts []nats.Option
	if s.hasAuth() {
		opts = append(opts, clearAuth)
	}
	if s.User != "" {
		opts = append(opts, nats.UserInfo(s.User, s.Password))
	}
	if s.Token != "" {
		opts = append(opts, nats.Token(s.Token))
	}
	if s.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(s.CredsFile))
	}
	if s.NKeyFile != "" {
		opt, err := nats.NkeyOptionFromSeed(s.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed %s: %w", s.NKeyFile, err)
		}
		opts = append(opts, opt)
	}
	if s.CAFile != "" {
		opts = append(opts, nats.RootCAs(s.CAFile))
	}
	if s.CertFile != "" || s.KeyFile != "" {
		opts = append(opts, nats.ClientCert(s.CertFile, s.KeyFile))
	}
	return opts, nil
}

// clearAuth drops the credentials a context set, so that those given
// explicitly are the only ones sent: a context's creds file and a user
// given on the command line would otherwise both go to the server.
func clearAuth(o *nats.Options) error {
	o.User, o.Password, o.UserInfo = "", "", nil
	o.Token, o.TokenHandler = "", nil
	o.UserJWT, o.SignatureCB, o.Nkey = nil, nil, ""
	return nil
}

// Options returns the resolved client options followed by extra (name,
// handlers, retry policy), which may override them.
func (t Target) Options(extra ...nats.Option) []nats.Option {
	out := make([]nats.Option, 0, len(t.opts)+len(extra))
	out = append(out, t.opts...)
	return append(out, extra...)
}

// Servers names the servers for messages: host:port, comma-separated,
// without credentials.
func (t Target) Servers() string { return Servers(t.URL) }

// Servers names the servers of a URL list as host:port, comma-separated,
// without credentials or scheme; a part that does not parse is shown as
// [unparsable URL].
func Servers(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !strings.Contains(p, "://") {
			p = "nats://" + p
		}
		u, err := url.Parse(p)
		if err != nil || u.Host == "" {
			parts[i] = "[unparsable URL]"
			continue
		}
		host := u.Host
		if u.Port() == "" {
			host += ":" + defaultPort(u.Scheme)
		}
		parts[i] = host
	}
	return strings.Join(parts, ",")
}

func defaultPort(scheme string) string {
	switch scheme {
	case "ws":
		return "80"
	case "wss":
		return "443"
	}
	return "4222"
}
