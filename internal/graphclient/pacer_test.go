package graphclient

import (
	"math"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestPacer(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// admitAt records n admitted calls evenly over d starting at from.
	admitAt := func(p *pacer, from time.Time, n int, d time.Duration) time.Time {
		for i := range n {
			p.admit(from.Add(time.Duration(i) * d / time.Duration(n)))
		}
		return from.Add(d)
	}
	tests := []struct {
		name   string
		run    func(p *pacer) time.Time
		lo, hi float64
	}{
		{"unlimited until throttled", func(p *pacer) time.Time {
			return admitAt(p, t0, 500, time.Second)
		}, float64(rate.Inf), float64(rate.Inf)},
		{"throttle sets the pace under the admitted rate", func(p *pacer) time.Time {
			end := admitAt(p, t0, 250, 5*time.Second) // 50/s
			p.throttle(end, 0)
			return end
		}, 0.95 * 49, 0.95 * 51},
		{"a burst of 429s is one signal", func(p *pacer) time.Time {
			end := admitAt(p, t0, 250, 5*time.Second)
			for i := range 10 {
				p.throttle(end.Add(time.Duration(i)*time.Millisecond), 0)
			}
			return end
		}, 0.95 * 49, 0.95 * 51},
		{"pace creeps up without throttling", func(p *pacer) time.Time {
			end := admitAt(p, t0, 250, 5*time.Second)
			p.throttle(end, 0)
			return admitAt(p, end.Add(time.Second), 100, 5*time.Second)
		}, 0.95 * 49 * 1.02 * 1.02, 0.95 * 51 * math.Pow(1.02, 6)},
		{"floor after an outage", func(p *pacer) time.Time {
			p.admit(t0)
			p.throttle(t0.Add(time.Minute), 0)
			return t0
		}, paceFloor, paceFloor},
		{"first burst falls back on Retry-After", func(p *pacer) time.Time {
			end := admitAt(p, t0, 5, 50*time.Millisecond)
			p.throttle(end, 20*time.Millisecond)
			return end
		}, 50, 50},
		{"measured rate wins over a Retry-After", func(p *pacer) time.Time {
			end := admitAt(p, t0, 250, 5*time.Second) // 50/s
			p.throttle(end, time.Millisecond)
			return end
		}, 0.95 * 49, 0.95 * 51},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPacer()
			tt.run(p)
			if got := p.limit(); got < tt.lo || got > tt.hi {
				t.Errorf("limit: got %.2f/s, want between %.2f and %.2f", got, tt.lo, tt.hi)
			}
		})
	}
}
