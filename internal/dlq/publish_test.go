package dlq_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/testkit"
)

// TestDuplicateOnFirstDeliveryIsNotStored: a dead letter dropped as a
// duplicate on its request's first delivery belongs to another message and
// was not stored; on a redelivery it is the same failure, stored once.
func TestDuplicateOnFirstDeliveryIsNotStored(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t, testkit.NATSOptions{})
	_, js := testkit.Connect(t, n.URL())
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "DLQ", Subjects: []string{"sitefollow.dlq.>"}, Duplicates: time.Hour}); err != nil {
		t.Fatal(err)
	}
	p := dlq.NewPublisher(js, "sitefollow.dlq")
	d := event.DeadLetter{Error: event.Failure{Code: "accessDenied"}, Attempts: 1,
		Origin: event.Origin{Stream: "SITEFOLLOW", Sequence: 1, StreamCreated: time.Unix(1, 0)}}
	if err := p.Publish(t.Context(), d); err != nil {
		t.Fatalf("first publish: got %v, want nil", err)
	}
	tests := []struct {
		name     string
		attempts int
		want     error
	}{
		{"same id on a first delivery", 1, dlq.ErrDuplicate},
		{"same id on a redelivery", 2, nil},
	}
	for _, tt := range tests {
		again := d
		again.Attempts = tt.attempts
		if err := p.Publish(t.Context(), again); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
}
