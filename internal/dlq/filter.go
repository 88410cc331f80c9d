package dlq

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Filter selects records; every field set must match (AND). The zero
// Filter selects all.
type Filter struct {
	// Code, User and Site match the record's error code, userId and
	// siteId (or siteUrl), ignoring case (Graph and Entra do).
	Code, User, Site string
	// After keeps records stored at or after it; Before those stored
	// before it.
	After, Before time.Time
	// FirstSeq and LastSeq bound the stream sequence, inclusive; 0 is
	// unbounded.
	FirstSeq, LastSeq uint64
}

// Match says whether f selects r. A record whose body could not be
// decoded matches only filters that do not look into the body.
func (f Filter) Match(r Record) bool {
	switch {
	case f.FirstSeq != 0 && r.Seq < f.FirstSeq, f.LastSeq != 0 && r.Seq > f.LastSeq:
		return false
	case !f.After.IsZero() && r.Time.Before(f.After), !f.Before.IsZero() && !r.Time.Before(f.Before):
		return false
	}
	if f.Code == "" && f.User == "" && f.Site == "" {
		return true
	}
	if r.Err != nil {
		return false
	}
	d := r.Letter
	return (f.Code == "" || strings.EqualFold(f.Code, d.Error.Code)) &&
		(f.User == "" || strings.EqualFold(f.User, d.UserID)) &&
		(f.Site == "" || strings.EqualFold(f.Site, d.SiteID) || strings.EqualFold(f.Site, d.SiteURL))
}

// ParseSeqRange parses "A-B" (A = B allowed) or a single "A" into
// inclusive bounds.
func ParseSeqRange(s string) (first, last uint64, err error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		b = a
	}
	first, errA := strconv.ParseUint(strings.TrimSpace(a), 10, 64)
	last, errB := strconv.ParseUint(strings.TrimSpace(b), 10, 64)
	switch {
	case errA != nil || errB != nil:
		return 0, 0, fmt.Errorf("sequence range %q: want A-B with A and B stream sequences", s)
	case first == 0:
		return 0, 0, fmt.Errorf("sequence range %q: sequences start at 1", s)
	case first > last:
		return 0, 0, fmt.Errorf("sequence range %q: %d is after %d", s, first, last)
	}
	return first, last, nil
}

// ParseAge parses an age such as 90m, 2h or 7d (days, which
// time.ParseDuration lacks). It must be positive.
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("age %q: want a duration such as 90m, 2h or 7d", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("age %q: want a duration such as 90m, 2h or 7d", s)
		}
	}
	if d <= 0 {
		return 0, errors.New("age " + strconv.Quote(s) + ": must be positive")
	}
	return d, nil
}
