package main

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/sitefollow/sitefollow/internal/config"
	"github.com/sitefollow/sitefollow/internal/natsconn"
)

// natsSettings is the one conversion of the NATS settings into what
// natsconn connects with: a defaulted URL is left out, so that a context's
// URL can take its place.
func natsSettings(n config.NATS) natsconn.Settings {
	s := natsconn.Settings{
		Context: n.Context, ConfigDir: n.ConfigDir,
		User: n.User, Password: n.Password, Token: n.Token,
		CredsFile: n.CredsFile, NKeyFile: n.NKeyFile,
		CAFile: n.CAFile, CertFile: n.CertFile, KeyFile: n.KeyFile,
	}
	if !n.URLDefaulted {
		s.URL = n.URL
	}
	return s
}

// resolveNATS finds the servers and client options for n, reading the
// nats CLI context it names or the one selected.
func resolveNATS(ctx context.Context, n config.NATS) (natsconn.Target, error) {
	t, err := natsconn.Resolve(ctx, natsSettings(n))
	if err != nil {
		return natsconn.Target{}, fmt.Errorf("connect to nats: %w", err)
	}
	return t, nil
}

// dialNATS connects once, for a command-line tool (dlq, send): no retries,
// JetStream checked, and a failure is a *natsconn.Error naming the server
// and the cause.
func dialNATS(ctx context.Context, n config.NATS, name string) (*nats.Conn, error) {
	t, err := resolveNATS(ctx, n)
	if err != nil {
		return nil, err
	}
	nc, err := t.Dial(ctx, nats.Name(name))
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	return nc, nil
}
