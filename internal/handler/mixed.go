package handler

import (
	"context"

	"github.com/sitefollow/sitefollow/internal/event"
	"github.com/sitefollow/sitefollow/internal/graphclient"
	"github.com/sitefollow/sitefollow/internal/ledger"
)

// Mixer is a Graph whose calls can carry a user's follows and unfollows
// together (the beta followingSites PATCH). *graphclient.Client implements
// it; the handler mixes only while Mixes reports true.
type Mixer interface {
	Mixes() bool
	ApplyMixed(ctx context.Context, userID string, follows, unfollows []string, opts ...graphclient.ApplyOption) []graphclient.SiteResult
}

// sendMixed makes a batch's calls with follows and unfollows mixed: the
// i-th follow call and the i-th unfollow call (batch.Calls gives a batch at
// most one of each when it is sized by the same maximum) go out as one.
// A batch holds one item per site, the latest request for it, so no site is
// both followed and unfollowed in one call.
func (h *Handler) sendMixed(ctx context.Context, m Mixer, userID string, calls [][]*item, permit graphclient.ApplyOption, outcomes map[string]ledger.Settlement) {
	var follows, unfollows [][]*item
	for _, call := range calls {
		if call[0].Action == event.Unfollow {
			unfollows = append(unfollows, call)
		} else {
			follows = append(follows, call)
		}
	}
	for i := range max(len(follows), len(unfollows)) {
		var call []*item
		var fs, us []string
		if i < len(follows) {
			for _, it := range follows[i] {
				call = append(call, it)
				fs = append(fs, it.Site)
			}
		}
		if i < len(unfollows) {
			for _, it := range unfollows[i] {
				call = append(call, it)
				us = append(us, it.Site)
			}
		}
		results := m.ApplyMixed(ctx, userID, fs, us, permit)
		for j, it := range call {
			outcomes[it.Key()] = ledger.Settlement{Seq: it.Ticket.Seq, Outcome: h.resolve(ctx, userID, it, results[j])}
		}
	}
}
