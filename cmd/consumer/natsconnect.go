package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sitefollow/sitefollow/internal/config"
)

// dialNATS connects once, for a command-line tool (dlq, send): no retries,
// and a failure says which server and why.
func dialNATS(ctx context.Context, n config.NATS, name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(name)}
	if n.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(n.CredsFile))
	}
	if d, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(max(0, time.Until(d))))
	}
	nc, err := nats.Connect(n.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", redactURL(n.URL), err)
	}
	return nc, nil
}
