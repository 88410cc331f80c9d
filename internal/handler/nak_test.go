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

func TestRedeliveryDelayBounded(t *testing.T) {
	h := New(Config{NakBaseDelay: time.Second, NakMaxDelay: 10 * time.Second, MaxAckPending: 100}, nil, nil, nil, zeroLogger(), nil)
	tests := []struct {
		name      string
		delivered uint64
		notBefore time.Duration
		lo, hi    time.Duration
	}{
		{"backoff alone", 1, 0, 800 * time.Millisecond, 1200 * time.Millisecond},
		{"Retry-After longer than the backoff", 1, 5 * time.Second, 5 * time.Second, 5 * time.Second},
		{"Retry-After of a day", 1, 24 * time.Hour, 10 * time.Second, 10 * time.Second},
		{"backoff jitter at the cap", 20, 0, 8 * time.Second, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := h.redeliveryDelay(tt.delivered, tt.notBefore)
			if got < tt.lo || got > tt.hi {
				t.Errorf("redeliveryDelay(%d, %v): got %v, want between %v and %v", tt.delivered, tt.notBefore, got, tt.lo, tt.hi)
			}
		})
	}
}
