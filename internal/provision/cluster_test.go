package provision_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/provision"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// streamReplicas reads the replicas of both streams and the bucket.
func streamReplicas(t *testing.T, js jetstream.JetStream, spec provision.Spec) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, name := range []string{spec.Stream, spec.DLQStream, "KV_" + spec.StateBucket} {
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		got[name] = s.CachedInfo().Config.Replicas
	}
	return got
}

func TestProvisionOnACluster(t *testing.T) {
	t.Parallel()
	c := testkit.StartCluster(t, 3)
	tests := []struct {
		name       string
		precreate  int // replicas of streams an operator created first; 0: none
		ask        int // SITEFOLLOW_STREAM_REPLICAS
		want       int
		wantReport bool
	}{
		{name: "fresh cluster gets R3 when asked", ask: 3, want: 3},
		{name: "operator's R3 is never lowered to R1", precreate: 3, ask: 1, want: 3, wantReport: true},
		{name: "R1 raised to R3 when asked", precreate: 1, ask: 3, want: 3},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, js := testkit.Connect(t, c.URLs())
			spec := testkit.Spec(t, nil)
			// Names of their own, so the cases share the cluster.
			suffix := string(rune('A' + i))
			spec.Stream, spec.DLQStream, spec.StateBucket = spec.Stream+suffix, spec.DLQStream+suffix, spec.StateBucket+suffix
			spec.Subjects = []string{"case" + suffix + ".requests.>"}
			spec.DLQSubjects = []string{"case" + suffix + ".dlq.>"}
			if tt.precreate > 0 {
				testkit.PrecreateStreams(t, js, spec, tt.precreate)
			}
			spec.Replicas = tt.ask
			var notes []string
			spec.Report = func(n string) { notes = append(notes, n) }
			testkit.Eventually(t, 2*time.Minute, "provisioning to succeed", func() bool {
				notes = nil
				_, err := provision.Apply(t.Context(), js, spec)
				return err == nil
			})
			for name, got := range streamReplicas(t, js, spec) {
				if got != tt.want {
					t.Errorf("%s replicas: got %d, want %d", name, got, tt.want)
				}
			}
			if tt.wantReport && len(notes) == 0 {
				t.Error("provisioning kept higher replicas without saying so")
			}
		})
	}
}
