// Package natsembed runs a NATS server with JetStream inside the process, for
// the demo, the benchmark and tests. Production uses a real cluster.
package natsembed

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options choose where the server stores JetStream data and which port it
// listens on (-1 picks a free one).
type Options struct {
	StoreDir string
	Port     int
}

// Start starts a server on 127.0.0.1 and waits until it accepts clients.
func Start(o Options) (*server.Server, error) {
	if o.Port == 0 {
		o.Port = server.RANDOM_PORT
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "sitefollow-embedded",
		Host:       "127.0.0.1",
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoLog:      true,
		NoSigs:     true,
		// Room for the benchmark's large backlogs.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  16 << 30,
	})
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("start embedded nats: not ready after 30s")
	}
	return ns, nil
}
