package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphsim"
	"github.com/sitefollow/sitefollow/internal/natsembed"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// TestNATSClosedForGoodExits: when the NATS client closes the connection for
// good, the consumer stops serving /livez and exits non-zero, so it is
// restarted, instead of living on with nothing processed.
//
// The client closes for good, whatever MaxReconnects says, on some server
// errors (nats.go's processErr): "maximum control line exceeded" among
// them. Lowering the server's max_control_line by a configuration reload
// makes the consumer's next protocol line (an ack, a pull request) too
// long: the server says so and drops it, and the client closes.
func TestNATSClosedForGoodExits(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATS(t, testkit.NATSOptions{})
	sim := testkit.StartSim(t, graphsim.Options{Sites: []string{testSite(1)}})
	base := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	env := append(testkit.ConsumerEnv(t, ns.URL(), sim, map[string]string{"SITEFOLLOW_HTTP_ADDR": base}), "SITEFOLLOW_TEST_MAIN=1")
	c := testkit.StartConsumer(t, testkit.ConsumerOptions{Exe: os.Args[0], Env: env})
	base = "http://" + base

	nc, js := testkit.Connect(t, ns.URL())
	testkit.Eventually(t, 2*time.Minute, "the consumer to pull", func() bool {
		info := testkit.ConsumerInfo(js)
		return info != nil && info.NumWaiting > 0
	})
	if code, body := get(t, base+"/livez"); code != http.StatusOK {
		t.Fatalf("livez before: got %d %q, want 200", code, body)
	}

	// 40 bytes take this test's plain publish below ("sitefollow.requests.app
	// <size>") but none of the consumer's acks or pull requests, whose
	// subjects alone are longer.
	ns.Reload(func(o *natsembed.Options) { o.MaxControlLine = 40 })
	if err := nc.Publish("sitefollow.requests.app", testkit.RequestBody("ann@contoso.com", event.Follow, testSite(1))); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}

	// /livez fails from the close on: 503 while the process shuts down,
	// refused once it is gone.
	testkit.Eventually(t, 3*time.Minute, "/livez to fail", func() bool {
		code, _ := get(t, base+"/livez")
		return code != http.StatusOK
	})
	err := c.Wait(3 * time.Minute)
	var exit *exec.ExitError
	switch {
	case err == nil:
		t.Errorf("consumer exited with status 0, want non-zero")
	case !errors.As(err, &exit):
		t.Fatalf("consumer: %v, want it to exit non-zero", err)
	}
	if logs := c.Logs(); !strings.Contains(logs, "nats connection closed for good") {
		t.Errorf("log does not say the connection closed for good:\n%s", logs)
	}
}
