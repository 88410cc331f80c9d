package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/natsembed"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// TestNATSAuthorizationFailureIsLoggedAndRecovered: a consumer whose NATS
// password the server refuses logs the server's reason at warn or error and
// keeps trying; once the server accepts the password it serves requests
// without being restarted.
func TestNATSAuthorizationFailureIsLoggedAndRecovered(t *testing.T) {
	t.Parallel()
	port := testkit.FreePort(t)
	dir := t.TempDir()
	start := func(password string) func() {
		t.Helper()
		ns, err := natsembed.Start(natsembed.Options{StoreDir: dir, Port: port, User: "sitefollow", Password: password})
		if err != nil {
			t.Fatalf("nats: %v", err)
		}
		return func() { ns.Shutdown(); ns.WaitForShutdown() }
	}
	stop := start("the-old-password")
	sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}})
	url := fmt.Sprintf("nats://sitefollow:the-new-password@127.0.0.1:%d", port)
	env := append(testkit.ConsumerEnv(t, url, sim, nil), "SITEFOLLOW_TEST_MAIN=1")
	c := testkit.StartConsumer(t, testkit.ConsumerOptions{Exe: os.Args[0], Env: env})
	testkit.Eventually(t, time.Minute, "the authorization failure in the log at warn or error", func() bool {
		return slices.ContainsFunc(strings.Split(c.Logs(), "\n"), func(line string) bool {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil {
				return false
			}
			level, _ := rec["level"].(string)
			return (level == "warn" || level == "error") && strings.Contains(strings.ToLower(line), "authorization violation")
		})
	})
	stop()
	stop = start("the-new-password")
	defer stop()

	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Minute, "the consumer to provision its streams once let in", func() bool { return testkit.ConsumerInfo(js) != nil })
	testkit.Publish(t, js, "ann@contoso.com", event.Follow, testSite(1))
	testkit.Eventually(t, time.Minute, "the request to be applied", func() bool { return testkit.StreamMsgs(js, "SITEFOLLOW") == 0 })
	if got := sim.Followed("ann@contoso.com"); len(got) != 1 {
		t.Errorf("followed: got %v, want %s", got, testSite(1))
	}
	if c.Exited() {
		t.Error("consumer exited, want it to recover by itself")
	}
}
