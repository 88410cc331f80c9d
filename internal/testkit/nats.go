package testkit

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/natsembed"
)

// NATSOptions configure StartNATS. The zero value is a fresh server on a
// free port with its store in t.TempDir().
type NATSOptions struct {
	// Port, if non-zero, is the client port; otherwise a free one is picked
	// once and kept across Restart.
	Port int
	// User and Password, when set, are the credentials the server requires;
	// URL then carries none (see URLWith).
	User, Password string
	// Users, instead of User and Password, are the server's users with
	// their permissions; Reload changes them while it runs.
	Users []*server.User
}

// NATS is one embedded nats-server with JetStream.
type NATS struct {
	t    testing.TB
	opts natsembed.Options

	mu sync.Mutex
	ns *server.Server // nil while shut down
}

// StartNATS starts an embedded server with JetStream on 127.0.0.1, stored in
// t.TempDir(), shut down when the test ends.
func StartNATS(t testing.TB, o NATSOptions) *NATS {
	t.Helper()
	port := o.Port
	if port == 0 {
		port = FreePort(t)
	}
	n := &NATS{t: t, opts: natsembed.Options{StoreDir: t.TempDir(), Port: port, User: o.User, Password: o.Password, Users: o.Users}}
	n.start()
	t.Cleanup(n.Shutdown)
	return n
}

func (n *NATS) start() {
	n.t.Helper()
	ns, err := natsembed.Start(n.opts)
	if err != nil {
		n.t.Fatalf("nats: %v", err)
	}
	n.mu.Lock()
	n.ns = ns
	n.mu.Unlock()
}

// URL is the client URL, the same across Restart.
func (n *NATS) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port) }

// URLWith is the client URL carrying user and password.
func (n *NATS) URLWith(user, password string) string {
	return fmt.Sprintf("nats://%s@127.0.0.1:%d", url.UserPassword(user, password).String(), n.opts.Port)
}

// Server is the running server, nil while shut down.
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ns
}

// Reload changes the running server's options by a configuration reload,
// as an operator does (granting a permission, lowering a limit); edit gets
// the options the server runs with. Connected clients keep their
// connections, unless the new options make the server close them.
func (n *NATS) Reload(edit func(*natsembed.Options)) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	edit(&n.opts)
	if err := natsembed.Reload(n.ns, n.opts); err != nil {
		n.t.Fatalf("nats: %v", err)
	}
}

// Shutdown stops the server and waits until it has stopped; safe to repeat.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	ns := n.ns
	n.ns = nil
	n.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}

// Restart stops the server and starts it again on the same port and store,
// as after a crash or an upgrade.
func (n *NATS) Restart() {
	n.t.Helper()
	n.Shutdown()
	n.start()
}

// Connect opens a client connection that reconnects forever (to any of the
// comma-separated urls) and closes when the test ends.
func Connect(t testing.TB, urls string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.RetryOnFailedConnect(true), nats.Name("testkit"))
	if err != nil {
		t.Fatalf("connect %s: %v", urls, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Cluster is an in-process JetStream cluster of embedded servers.
type Cluster struct {
	t     testing.TB
	name  string
	nodes []*NATS
}

// StartCluster starts n servers named node0…node(n-1) in one cluster, with
// routes between all of them, JetStream on, distinct stores and ports, and
// waits until JetStream has a meta leader.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, name: "sitefollow-test"}
	routes := make([]string, n)
	ports := make([]int, n)
	for i := range n {
		ports[i] = FreePort(t)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", FreePort(t))
	}
	dir := t.TempDir()
	for i := range n {
		var routePort int
		if _, err := fmt.Sscanf(routes[i], "nats-route://127.0.0.1:%d", &routePort); err != nil {
			t.Fatalf("route port: %v", err)
		}
		c.nodes = append(c.nodes, &NATS{t: t, opts: natsembed.Options{
			StoreDir:   filepath.Join(dir, fmt.Sprintf("node%d", i)),
			Port:       ports[i],
			ServerName: fmt.Sprintf("node%d", i),
			Cluster:    &natsembed.ClusterOptions{Name: c.name, Port: routePort, Routes: routes},
		}})
	}
	// Start them together: a clustered server waits for its peers before
	// it is ready for clients.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, node := range c.nodes {
		wg.Go(func() {
			ns, err := natsembed.Start(node.opts)
			errs[i] = err
			node.mu.Lock()
			node.ns = ns
			node.mu.Unlock()
		})
	}
	wg.Wait()
	for i := range c.nodes {
		t.Cleanup(c.nodes[i].Shutdown)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("cluster node %d: %v", i, err)
		}
	}
	c.WaitMetaLeader(t)
	return c
}

// Size is the number of nodes.
func (c *Cluster) Size() int { return len(c.nodes) }

// Node returns node i.
func (c *Cluster) Node(i int) *NATS { return c.nodes[i] }

// URLs lists every node's client URL, comma-separated, for NATS_URL.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// Stop shuts node i down, as if its machine went away.
func (c *Cluster) Stop(i int) { c.nodes[i].Shutdown() }

// Restart starts node i again with the same ports and store.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.nodes[i].Shutdown()
	c.nodes[i].start()
}

// WaitMetaLeader waits until a running node is the JetStream meta leader and
// every running node knows it.
func (c *Cluster) WaitMetaLeader(t testing.TB) {
	t.Helper()
	Eventually(t, 2*time.Minute, "a JetStream meta leader", func() bool {
		leader := false
		for _, n := range c.nodes {
			ns := n.Server()
			if ns == nil {
				continue
			}
			if !ns.JetStreamIsCurrent() {
				return false
			}
			if ns.JetStreamIsLeader() {
				leader = true
			}
		}
		return leader
	})
}

// index maps a server name to its node.
func (c *Cluster) index(name string) int {
	for i, n := range c.nodes {
		if n.opts.ServerName == name {
			return i
		}
	}
	return -1
}

// client is a short-lived connection to any running node.
func (c *Cluster) client(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect to cluster: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// StreamLeader waits until stream has a leader and returns its node index.
func (c *Cluster) StreamLeader(t testing.TB, stream string) int {
	t.Helper()
	return c.leader(t, "stream "+stream, func(ctx context.Context, js jetstream.JetStream) (*jetstream.ClusterInfo, error) {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return nil, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return nil, err
		}
		return info.Cluster, nil
	})
}

// ConsumerLeader waits until consumer on stream has a leader and returns its
// node index.
func (c *Cluster) ConsumerLeader(t testing.TB, stream, consumer string) int {
	t.Helper()
	return c.leader(t, "consumer "+consumer, func(ctx context.Context, js jetstream.JetStream) (*jetstream.ClusterInfo, error) {
		cons, err := js.Consumer(ctx, stream, consumer)
		if err != nil {
			return nil, err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, err
		}
		return info.Cluster, nil
	})
}

// leader polls cluster until it names a leader that is one of c's nodes.
func (c *Cluster) leader(t testing.TB, what string, cluster func(context.Context, jetstream.JetStream) (*jetstream.ClusterInfo, error)) int {
	t.Helper()
	nc, js := c.client(t)
	defer nc.Close()
	leader := -1
	Eventually(t, 2*time.Minute, "a leader for "+what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := cluster(ctx, js)
		if err != nil || info == nil {
			return false
		}
		leader = c.index(info.Leader)
		return leader >= 0
	})
	return leader
}

// WaitStreamCurrent waits until stream has a leader and every replica is
// online and current, as after a restarted node has caught up.
func (c *Cluster) WaitStreamCurrent(t testing.TB, stream string) {
	t.Helper()
	nc, js := c.client(t)
	defer nc.Close()
	Eventually(t, 2*time.Minute, "every replica of stream "+stream+" to be current", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
			return false
		}
		if len(info.Cluster.Replicas) != len(c.nodes)-1 {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return false
			}
		}
		return true
	})
}
