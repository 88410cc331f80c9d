package config

import (
	"testing"
	"time"
)

func TestParseBudget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Budget
		wantErr bool
	}{
		{"", Budget{}, false},
		{"1250/1m", Budget{Units: 1250, Window: time.Minute}, false},
		{" 6250 / 60s ", Budget{Units: 6250, Window: time.Minute}, false},
		{"20/2s", Budget{Units: 20, Window: 2 * time.Second}, false},
		{"1250", Budget{}, true},
		{"1250/m", Budget{}, true},
		{"0/1m", Budget{}, true},
		{"-5/1m", Budget{}, true},
		{"1250/500ms", Budget{}, true},
		{"1250/48h", Budget{}, true},
		{"lots/1m", Budget{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseBudget(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseBudget(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err == nil {
				if back, err := ParseBudget(got.String()); err != nil || back != got {
					t.Errorf("ParseBudget(%q.String()) = %+v, %v; want %+v", tt.in, back, err, got)
				}
			}
		})
	}
}
