package natsconn

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// CheckJetStream asks the account's JetStream for its limits, so that a
// server or account without JetStream is reported as such rather than as
// "no responders" from the first stream request.
func CheckJetStream(ctx context.Context, nc *nats.Conn, servers string) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return Classify(servers, fmt.Errorf("jetstream: %w", err))
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		return Classify(servers, fmt.Errorf("jetstream account info: %w", err))
	}
	return nil
}

// Dial connects once, without retrying, and checks that JetStream answers:
// for command-line tools, which should fail at once saying which server
// and why. The connect timeout follows ctx's deadline when it has one.
func (t Target) Dial(ctx context.Context, extra ...nats.Option) (*nats.Conn, error) {
	opts := t.Options(extra...)
	if d, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(max(0, time.Until(d))))
	}
	nc, err := nats.Connect(t.URL, opts...)
	if err != nil {
		return nil, Classify(t.Servers(), err)
	}
	if err := CheckJetStream(ctx, nc, t.Servers()); err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}
