package graphclient

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// quota is what an answer's RateLimit-Limit, RateLimit-Remaining and
// RateLimit-Reset headers (IETF draft-03, which SharePoint sends once 80% of
// the app's per-minute budget is used) say about the budget: limit and
// remaining in resource units, reset until the window's units come back.
type quota struct {
	limit, remaining float64
	reset            time.Duration
	ok               bool
}

// maxQuotaReset bounds RateLimit-Reset: SharePoint's windows are a minute
// (the daily budget has no headers), so a longer value is noise and must
// not stretch the pacer's idea of the window.
const maxQuotaReset = time.Hour

// parseQuota reads the RateLimit headers; ok is false unless all three are
// present and sane. Values are bounded so outside data cannot overflow.
func parseQuota(h http.Header) quota {
	limit, okL := headerNumber(h, "RateLimit-Limit")
	remaining, okR := headerNumber(h, "RateLimit-Remaining")
	reset, okS := headerNumber(h, "RateLimit-Reset")
	if !okL || !okR || !okS || limit <= 0 {
		return quota{}
	}
	return quota{
		limit:     limit,
		remaining: min(remaining, limit),
		reset:     time.Duration(min(reset, maxQuotaReset.Seconds()) * float64(time.Second)),
		ok:        true,
	}
}

// headerNumber parses a non-negative number of at most a billion. Draft-03
// allows a list ("100, 100;w=60"); the first item is the one that binds.
func headerNumber(h http.Header, name string) (float64, bool) {
	v := h.Get(name)
	if i := strings.IndexAny(v, ",;"); i >= 0 {
		v = v[:i]
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || f < 0 || f > 1e9 || f != f {
		return 0, false
	}
	return f, true
}
