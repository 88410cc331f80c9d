// Package natsembed runs a NATS server with JetStream inside the process, for
// the demo, the benchmark and tests. Production uses a real cluster.
package natsembed

import (
	"cmp"
	"fmt"
	"net/url"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options choose where the server stores JetStream data and which port it
// listens on (-1 picks a free one). ServerName and Cluster are for test
// clusters of several embedded servers.
type Options struct {
	StoreDir string
	Port     int
	// ServerName defaults to "sitefollow-embedded"; servers of one cluster
	// need distinct names.
	ServerName string
	// Cluster, when set, makes the server a member of a JetStream cluster.
	Cluster *ClusterOptions
	// User and Password, when set, are the only credentials the server
	// accepts from clients (tests of authorization failures and of secrets
	// kept out of outputs).
	User, Password string
	// MaxPayload is the largest message the server accepts; 0 keeps the
	// server's default (1 MiB). The benchmark raises it for events of 1 MB
	// and more.
	MaxPayload int32
	// Users, when set instead of User and Password, are the accounts'
	// users with their permissions (tests of denied publishes).
	Users []*server.User
	// MaxControlLine is the longest protocol line the server accepts from
	// a client; 0 keeps the server's default (4 KiB). A client sending a
	// longer one is told so and disconnected, and the NATS client closes
	// for good on that error (tests of a connection closed for good).
	MaxControlLine int32
}

// ClusterOptions join a server to a cluster.
type ClusterOptions struct {
	Name string // cluster name, the same on every member
	Port int    // route listener port on 127.0.0.1
	// Routes are the route URLs of the members (nats-route://127.0.0.1:PORT);
	// the server's own is ignored.
	Routes []string
}

// Start starts a server on 127.0.0.1 and waits until it accepts clients.
func Start(o Options) (*server.Server, error) {
	if o.Port == 0 {
		o.Port = server.RANDOM_PORT
	}
	opts, err := serverOptions(o)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	ns, err := server.NewServer(opts)
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

// Reload applies o to the running ns as a configuration reload does, for
// what a reload may change (users and their permissions); o must name the
// port ns listens on.
func Reload(ns *server.Server, o Options) error {
	opts, err := serverOptions(o)
	if err != nil {
		return fmt.Errorf("reload embedded nats: %w", err)
	}
	if err := ns.ReloadOptions(opts); err != nil {
		return fmt.Errorf("reload embedded nats: %w", err)
	}
	return nil
}

func serverOptions(o Options) (*server.Options, error) {
	opts := &server.Options{
		ServerName: cmp.Or(o.ServerName, "sitefollow-embedded"),
		Host:       "127.0.0.1",
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoLog:      true,
		NoSigs:     true,
		// Room for the benchmark's large backlogs.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  16 << 30,
		Username:           o.User,
		Password:           o.Password,
		MaxPayload:         o.MaxPayload,
		Users:              o.Users,
		MaxControlLine:     o.MaxControlLine,
	}
	if c := o.Cluster; c != nil {
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: "127.0.0.1", Port: c.Port}
		for _, r := range c.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	return opts, nil
}
