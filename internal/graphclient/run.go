package graphclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// site is one distinct (case-insensitive) id of an Apply call.
type site struct {
	id      string // as first given
	indexes []int  // positions in the caller's slice
	lastErr *SiteError
	settled bool
	verdict verdict   // what the answer being handled says about the site
	op      Operation // Add or Remove: what is asked for this site
}

// run is the state of one Apply call.
type run struct {
	c       *Client
	userID  string
	op      Operation
	results []SiteResult
	sites   map[string]*site // by lower-case id
	order   []string         // lower-case ids in first-seen order
	permit  func(ctx context.Context, callTimeout time.Duration) error
	// parts are the calls the next round makes, each a list of open keys;
	// nil means one call for every open site. A whole-call 400 splits a
	// part in two, and the halves stay apart in later rounds.
	parts [][]string
}

func newRun(c *Client, userID string, op Operation, siteIDs []string) *run {
	r := &run{
		c: c, userID: userID, op: op,
		results: make([]SiteResult, len(siteIDs)),
		sites:   make(map[string]*site, len(siteIDs)),
		order:   make([]string, 0, len(siteIDs)),
	}
	// One allocation for all sites and one for their indexes: a repeated
	// id is rare and only then does its indexes slice grow on its own.
	store := make([]site, 0, len(siteIDs))
	indexes := make([]int, len(siteIDs))
	for i, id := range siteIDs {
		r.results[i].SiteID = id
		key := strings.ToLower(id)
		if s, ok := r.sites[key]; ok {
			s.indexes = append(s.indexes, i)
			continue
		}
		indexes[i] = i
		store = append(store, site{id: id, indexes: indexes[i : i+1 : i+1], op: op})
		r.sites[key] = &store[len(store)-1]
		r.order = append(r.order, key)
	}
	return r
}

func (r *run) pending() []string {
	keys := make([]string, 0, len(r.order))
	for _, k := range r.order {
		if !r.sites[k].settled {
			keys = append(keys, k)
		}
	}
	return keys
}

func (r *run) settle(key string, o Outcome, e *SiteError) {
	s := r.sites[key]
	s.settled = true
	for _, i := range s.indexes {
		r.results[i].Outcome = o
		r.results[i].Err = nil
		if e != nil {
			// Each result owns its error: callers may annotate it.
			own := *e
			r.results[i].Err = &own
		}
	}
}

func (r *run) settleAll(o Outcome, e *SiteError) {
	for _, k := range r.pending() {
		r.settle(k, o, e)
	}
}

// setPendingErr records why every unsettled site is still open.
func (r *run) setPendingErr(keys []string, e *SiteError) {
	for _, k := range keys {
		r.sites[k].lastErr = e
	}
}

// finish turns every site still open into Unresolved.
func (r *run) finish(ctx context.Context, err error) {
	var canceled *SiteError
	if ctx.Err() != nil {
		canceled = &SiteError{Code: CodeCanceled, Message: context.Cause(ctx).Error()}
	}
	for _, k := range r.order {
		if r.sites[k].settled {
			continue
		}
		e := r.sites[k].lastErr
		switch {
		case canceled != nil:
			e = canceled
		case e == nil:
			// Unreachable in practice: every retry path records an error.
			msg := "no verdict"
			if err != nil {
				msg = err.Error()
			}
			e = &SiteError{Code: CodeNetworkError, Message: msg}
		}
		r.settle(k, Unresolved, e)
	}
}

// sendPart makes one Graph call (two when the first is answered 401) for keys,
// all open, and settles what the answer decides.
func (r *run) sendPart(ctx context.Context, keys []string) error {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = r.sites[k].id
	}
	body, err := r.requestBody(keys, ids)
	if err != nil {
		return backoff.Permanent(fmt.Errorf("graphclient: encode request: %w", err))
	}

	t, err := r.c.admission.enter(ctx, r.c.maxRetryAfter)
	defer t.done()
	if err != nil {
		return r.notAdmitted(keys, err)
	}
	token, err := r.c.tokens.get(ctx)
	if err != nil {
		return r.tokenFailure(ctx, keys, err)
	}
	// The token fetch may have taken a while; another call may have been
	// throttled meanwhile.
	if err := r.permitted(ctx, t, keys); err != nil {
		return err
	}
	resp, err := r.dispatch(ctx, keys, token, body)
	defer func() { resp.release(r.c) }()
	t.observe(r.c.now(), resp)
	if err == nil && resp.status == http.StatusUnauthorized {
		r.logCall(resp, nil)
		resp.release(r.c)
		// Graph rejected the token (revoked, rotated secret, CAE event): get
		// a new one, bypassing every cache, and try exactly once more.
		r.c.metrics.retry(r.op, reasonUnauthorized)
		token, err = r.c.tokens.refresh(ctx, token, resp.claimsChallenge())
		if err != nil {
			return r.tokenFailure(ctx, keys, err)
		}
		if err := r.permitted(ctx, t, keys); err != nil {
			return err
		}
		resp, err = r.dispatch(ctx, keys, token, body)
		t.observe(r.c.now(), resp)
		if err == nil && resp.status == http.StatusUnauthorized {
			r.logCall(resp, nil)
			e := resp.wholeCallError(CodeUnauthenticated)
			e.Code = CodeUnauthenticated
			r.setPendingErr(keys, e)
			return backoff.Permanent(errStop)
		}
	}
	if err != nil {
		r.logCall(nil, err)
		return r.transportFailure(ctx, keys, err)
	}
	result := r.handle(keys, resp)
	r.logCall(resp, nil)
	return result
}

// notAdmitted ends the attempts when admission refused the request: a
// pause longer than MaxRetryAfter leaves the sites to the caller's
// redelivery, Unresolved with CodeThrottled and the pause as RetryAfter.
func (r *run) notAdmitted(keys []string, err error) error {
	var tooLong *gateTooLongError
	if errors.As(err, &tooLong) {
		r.setPendingErr(keys, &SiteError{
			Code:       CodeThrottled,
			Message:    fmt.Sprintf("graph asked the app to pause for %s, more than the %s allowed in process", tooLong.wait.Round(time.Millisecond), r.c.maxRetryAfter),
			RetryAfter: tooLong.wait,
		})
		return backoff.Permanent(errStop)
	}
	return backoff.Permanent(err)
}

// permitted asks the caller's permit, then the gate again, last thing
// before the request goes out: the permit may take a round trip, in which
// another call may have been throttled. If the gate held the request back,
// the permit is asked again, since what it vouched for (a lease outliving
// the call) was measured from before the wait.
func (r *run) permitted(ctx context.Context, t *ticket, keys []string) error {
	for {
		if err := r.askPermit(ctx, keys); err != nil {
			return err
		}
		waited, err := t.recheck(ctx)
		if err != nil {
			return r.notAdmitted(keys, err)
		}
		if waited == 0 {
			return nil
		}
	}
}

// askPermit asks the caller's permit, if any, whether a request may go out
// now; a refusal ends the attempts.
func (r *run) askPermit(ctx context.Context, keys []string) error {
	if r.permit == nil {
		return nil
	}
	if err := r.permit(ctx, r.c.callTimeout()); err != nil {
		if ctx.Err() != nil {
			return backoff.Permanent(ctx.Err())
		}
		r.setPendingErr(keys, &SiteError{Code: CodeNotPermitted, Message: err.Error()})
		return backoff.Permanent(errStop)
	}
	return nil
}
