package handler

import (
	"github.com/rs/zerolog"
	"testing"
	"time"
)

func TestNakDelayGrowsWithDeliveries(t *testing.T) {
	h := New(Config{NakBaseDelay: time.Second, NakMaxDelay: 10 * time.Second, MaxAckPending: 100}, nil, nil, nil, zeroLogger(), nil)
	tests := []struct {
		delivered uint64
		lo, hi    time.Duration
	}{
		{1, 800 * time.Millisecond, 1200 * time.Millisecond},
		{2, 1600 * time.Millisecond, 2400 * time.Millisecond},
		{3, 3200 * time.Millisecond, 4800 * time.Millisecond},
		{20, 8 * time.Second, 12 * time.Second},
	}
	for _, tt := range tests {
		got := h.nakDelay(tt.delivered)
		if got < tt.lo || got > tt.hi {
			t.Errorf("nakDelay(%d): got %v, want between %v and %v", tt.delivered, got, tt.lo, tt.hi)
		}
	}
}

func zeroLogger() zerolog.Logger { return zerolog.Nop() }
