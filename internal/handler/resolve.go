package handler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphclient"
)

// SiteResolver turns the site URLs requests carry into site ids.
// *graphclient.Client implements it; New finds it on the Graph it is given.
type SiteResolver interface {
	// CachedSite returns the id cached for a URL, without I/O.
	CachedSite(url string) (string, bool)
	// ResolveSite returns the id of the site at url; a URL with no site
	// is an error matching graphclient.ErrSiteNotFound, and every error a
	// *graphclient.ResolveError.
	ResolveSite(ctx context.Context, url string) (string, error)
}

// verdict is how a delivery the resolver stage decided is settled at once
// by the loop, which owns every acknowledgement.
type verdict uint8

const (
	// settleLater: the delivery goes to the aggregator as usual.
	settleLater verdict = iota
	// settleAck: nothing is left to send (every URL dead-lettered, and
	// stored); acknowledge.
	settleAck
	// settleNak: a resolution failed transiently, was cut short by
	// shutdown, or a dead letter could not be stored; redeliver it all.
	settleNak
)

// errNoResolver is the failure of a URL when the Graph given to New
// resolves none: redelivered, in case a replica that can takes it.
var errNoResolver = errors.New("handler: this Graph client does not resolve site URLs")

// resolveWorkers is how many URLs are resolved at once: a quarter of the
// Graph calls allowed in flight, between 1 and 16. Resolving GETs take
// the same admission tickets as the follow calls, so more would only
// queue there.
func (h *Handler) resolveWorkers() int {
	return min(max(h.cfg.MaxConcurrency/4, 1), 16)
}

// resolveStage resolves the URLs of deliveries whose sites are not all
// cached, between the Consume callback (which must not do I/O) and the
// loop (which must not either): a fixed number of goroutines fed by a
// bounded channel. When the channel is full the callback waits, so the
// client stops pulling, as when the intake is full. It hands each delivery
// on to the mailbox with the resolved ids among its sites, so the loop and
// the aggregator only ever see site ids: a URL and the id of the same site
// have one key in the aggregator and the ledger.
//
// It stops (stop) after the subscription has drained and before the
// loop's final flush; ctx, Run's, is cancelled by then, so resolutions in
// flight end at once, and every delivery still in the stage reaches the
// mailbox marked for NAK.
type resolveStage struct {
	h     *Handler
	inbox *mailbox
	in    chan delivery
	// done is closed by stop, to release callbacks waiting in submit.
	done chan struct{}
	// mu guards closed; submit holds it shared while it sends, so stop
	// closes in only once no send can be under way.
	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup
}

func (h *Handler) startResolver(ctx context.Context, inbox *mailbox) *resolveStage {
	n := h.resolveWorkers()
	s := &resolveStage{h: h, inbox: inbox, in: make(chan delivery, 2*n), done: make(chan struct{})}
	for range n {
		s.wg.Go(func() {
			for d := range s.in {
				s.inbox.put(s.resolve(ctx, d))
			}
		})
	}
	return s
}

// submit hands d to the stage, waiting while it is full; once the stage
// stopped, d goes to the mailbox marked for NAK.
func (s *resolveStage) submit(d delivery) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.closed {
		select {
		case s.in <- d:
			return
		case <-s.done:
		}
	}
	d.urls, d.verdict = nil, settleNak
	s.inbox.put(d)
}

// stop ends the stage once every delivery in it reached the mailbox.
func (s *resolveStage) stop() {
	close(s.done)
	s.mu.Lock()
	s.closed = true
	close(s.in)
	s.mu.Unlock()
	s.wg.Wait()
}

// resolve resolves d's URLs and returns d with their ids among its sites,
// or with a verdict. A URL Graph has no site for (or refuses for good) is
// dead-lettered, naming the URL, and the others go on; a transient failure
// sends the whole message back, unless this is its last delivery, where
// the URL is dead-lettered as retriesExhausted.
func (s *resolveStage) resolve(ctx context.Context, d delivery) delivery {
	h := s.h
	urls := d.urls
	d.urls = nil
	for _, u := range urls {
		id, err := h.resolveSite(ctx, u)
		if err == nil {
			d.sites = append(d.sites, id)
			continue
		}
		f, again := h.urlFailure(ctx, d.t, err)
		if again {
			d.verdict = settleNak
			return d
		}
		if err := h.deadLetterURL(ctx, d, u, f); err != nil {
			h.log.Error().Err(err).Str("user", d.userID).Str("siteUrl", event.Truncate(u, logCodeBytes)).
				Uint64("seq", d.t.seq()).Msg("dead-letter publish failed; the request will be redelivered")
			d.t.unstored = true
			d.verdict = settleNak
			return d
		}
	}
	d.sites = distinctSites(d.sites)
	if len(d.sites) == 0 {
		d.verdict = settleAck
	}
	return d
}

func (h *Handler) resolveSite(ctx context.Context, u string) (string, error) {
	if h.sites == nil {
		return "", errNoResolver
	}
	id, err := h.sites.ResolveSite(ctx, u)
	if err != nil {
		return "", fmt.Errorf("handler: %w", err)
	}
	return id, nil
}

// urlFailure says what a failed resolution becomes: the dead letter's
// failure, or again when the message must simply come back. Shutdown, a
// missing token and a missing resolver never dead-letter (they say nothing
// about the URL); other transient failures do on the last delivery.
func (h *Handler) urlFailure(ctx context.Context, t *tracked, err error) (f event.Failure, again bool) {
	var re *graphclient.ResolveError
	if !errors.As(err, &re) {
		return event.Failure{}, true
	}
	f = event.Failure{Code: re.Err.Code, Message: re.Err.Message, HTTPStatus: re.Err.HTTPStatus,
		RequestID: re.Err.RequestID, ClientRequestID: re.Err.ClientRequestID}
	switch {
	case errors.Is(err, graphclient.ErrSiteNotFound):
		f.Code = event.CodeSiteNotFound
		f.Message = fmt.Sprintf("graph has no site at %s: %s: %s", re.URL, re.Err.Code, re.Err.Message)
		return f, false
	case !re.Transient:
		return f, false
	case ctx.Err() != nil || re.Err.Code == graphclient.CodeTokenUnavailable || !h.lastDelivery(ctx, t):
		t.holdRetryAfter(re.Err.RetryAfter)
		return event.Failure{}, true
	}
	f.Message = fmt.Sprintf("gave up resolving %s after %d deliveries: %s: %s", re.URL, t.delivered, f.Code, f.Message)
	f.Code = event.CodeRetriesExhausted
	return f, false
}

// deadLetterURL stores the dead letter of one site URL of d: the URL
// named, the request narrowed to it.
func (h *Handler) deadLetterURL(ctx context.Context, d delivery, u string, f event.Failure) error {
	t := d.t
	req := t.requestAs(d.userID, d.action)
	dl := h.deadLetter(t, f)
	dl.UserID, dl.Action, dl.SiteURL = d.userID, d.action, u
	dl.Event, dl.Narrowed = event.NarrowedURLEvent(req, u), true
	if err := h.dlq.Publish(ctx, dl); err != nil {
		h.metrics.deadLetterFailed()
		return fmt.Errorf("dead-letter site URL of %d: %w", t.seq(), err)
	}
	h.metrics.deadLettered(dlq.Label(f.Code))
	h.log.Info().Str("user", d.userID).Str("action", string(d.action)).Str("siteUrl", event.Truncate(u, logCodeBytes)).
		Str("code", event.Truncate(f.Code, logCodeBytes)).Int("httpStatus", f.HTTPStatus).Msg("site URL dead-lettered")
	return nil
}

// cachedSites splits a request's URLs into the ids cached for them, added
// to ids, and the URLs left to resolve. It does no I/O, for the Consume
// callback.
func (h *Handler) cachedSites(ids, urls []string) (sites, unresolved []string) {
	sites = ids
	if h.sites == nil {
		return sites, urls
	}
	for _, u := range urls {
		if id, ok := h.sites.CachedSite(u); ok {
			sites = append(sites, id)
			continue
		}
		unresolved = append(unresolved, u)
	}
	if len(unresolved) == 0 {
		sites = distinctSites(sites)
	}
	return sites, unresolved
}

// distinctSites keeps the first of ids equal under event.SiteKey (site ids
// are ASCII, so EqualFold is that comparison without allocating): a URL
// and an id of the same site, or two URLs of one, are one site.
func distinctSites(ids []string) []string {
	out := ids[:0:0]
next:
	for _, id := range ids {
		for _, kept := range out {
			if strings.EqualFold(kept, id) {
				continue next
			}
		}
		out = append(out, id)
	}
	return out
}
