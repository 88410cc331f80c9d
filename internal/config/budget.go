package config

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Budget is a Graph budget: Units resource units per Window. The zero
// value means unknown.
type Budget struct {
	Units  float64
	Window time.Duration
}

// ParseBudget reads "<units>/<window>", e.g. "1250/1m"; "" is the zero
// Budget.
func ParseBudget(v string) (Budget, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return Budget{}, nil
	}
	units, window, ok := strings.Cut(v, "/")
	if !ok {
		return Budget{}, errors.New("must be <resource units>/<window>, e.g. 1250/1m")
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(units), 64)
	if err != nil || n <= 0 || n > 1e9 {
		return Budget{}, errors.New("units must be a positive number (e.g. 1250/1m)")
	}
	w, err := time.ParseDuration(strings.TrimSpace(window))
	if err != nil || w < time.Second || w > 24*time.Hour {
		return Budget{}, errors.New("window must be a duration from 1s to 24h (e.g. 1250/1m)")
	}
	return Budget{Units: n, Window: w}, nil
}

// check holds a hand-built Budget to what ParseBudget accepts.
func (b Budget) check() error {
	if b == (Budget{}) {
		return nil
	}
	if _, err := ParseBudget(b.String()); err != nil || b.Units <= 0 {
		return errors.New("must be <resource units>/<window> with positive units and a window from 1s to 24h")
	}
	return nil
}

// String is the form ParseBudget reads; "" for the zero Budget.
func (b Budget) String() string {
	if b.Units == 0 {
		return ""
	}
	return strconv.FormatFloat(b.Units, 'g', -1, 64) + "/" + b.Window.String()
}
