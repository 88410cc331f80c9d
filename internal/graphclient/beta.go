package graphclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// API names the Graph calls a Client makes.
type API string

// The APIs a Client can speak.
const (
	// APIV1 is POST /v1.0/users/{id}/followedSites/add and .../remove, one
	// action per call.
	APIV1 API = "v1"
	// APIBetaFollowingSites is the older PATCH
	// /beta/users/{id}/followingSites, follows and unfollows mixed in one
	// call. It is beta, gone from Microsoft's current documentation and
	// unsupported in production by Microsoft.
	APIBetaFollowingSites API = "beta-followingsites"
)

// FollowingSites is the Operation label (metrics, logs) of a beta
// followingSites call, whatever actions it carries.
const FollowingSites Operation = "followingSites"

// orDefault is a, or APIV1 when a is empty; an unknown API is an error.
func (a API) orDefault() (API, error) {
	switch a {
	case "":
		return APIV1, nil
	case APIV1, APIBetaFollowingSites:
		return a, nil
	}
	return "", fmt.Errorf("graphclient: new: unknown API %q (want %q or %q)", a, APIV1, APIBetaFollowingSites)
}

// Mixes reports whether one call can carry a user's follows and unfollows
// together (APIBetaFollowingSites), so callers should use ApplyMixed.
func (c *Client) Mixes() bool { return c.api == APIBetaFollowingSites }

// ApplyMixed follows follows and unfollows unfollows for one user. With
// APIBetaFollowingSites they go out in one PATCH; with APIV1 it is one
// Apply per action, follows first. It returns one SiteResult per input
// site: follows' results, then unfollows'. A site in both lists (the caller
// should have kept only the latest request) is Rejected with
// CodeInvalidOperation: one call cannot say which action wins.
func (c *Client) ApplyMixed(ctx context.Context, userID string, follows, unfollows []string, opts ...ApplyOption) []SiteResult {
	if !c.Mixes() {
		return append(c.Apply(ctx, userID, Add, follows, opts...), c.Apply(ctx, userID, Remove, unfollows, opts...)...)
	}
	r := newRun(c, userID, Add, append(append(make([]string, 0, len(follows)+len(unfollows)), follows...), unfollows...))
	r.op = FollowingSites
	for _, o := range opts {
		o(r)
	}
	if len(r.results) == 0 {
		return r.results
	}
	if userID == "" || userID == "." || userID == ".." {
		r.settleAll(Rejected, &SiteError{Code: CodeInvalidUserID, Message: fmt.Sprintf("invalid user id %q", userID)})
		return r.results
	}
	for _, id := range unfollows {
		s := r.sites[strings.ToLower(id)]
		if s.indexes[0] < len(follows) {
			if !s.settled {
				r.settle(strings.ToLower(id), Rejected, &SiteError{Code: CodeInvalidOperation,
					Message: fmt.Sprintf("site %q is both followed and unfollowed in one call", id)})
			}
			continue
		}
		s.op = Remove
	}
	r.retry(ctx)
	return r.results
}

// betaEntry is one site of a followingSites PATCH, as the beta page shows.
type betaEntry struct {
	ID     string `json:"id"`
	Action string `json:"@oneDrive.action"`
}

// betaActions are the followingSites actions for each Operation.
var betaActions = map[Operation]string{Add: "follow", Remove: "unfollow"}

// requestBody is the body of the call for the open sites keys (ids in the
// same order): v1's {"value":[{"id"}]} or the beta entries with their action.
func (r *run) requestBody(keys, ids []string) ([]byte, error) {
	if r.c.api != APIBetaFollowingSites {
		return requestBody(ids)
	}
	v := struct {
		Value []betaEntry `json:"value"`
	}{Value: make([]betaEntry, len(keys))}
	for i, k := range keys {
		v.Value[i] = betaEntry{ID: ids[i], Action: betaActions[r.sites[k].op]}
	}
	return json.Marshal(v)
}

// target is the method and URL of the run's call.
func (r *run) target() (method, target string) {
	user := url.PathEscape(r.userID)
	if r.c.api == APIBetaFollowingSites {
		return http.MethodPatch, r.c.baseURL + "/beta/users/" + user + "/followingSites"
	}
	return http.MethodPost, r.c.baseURL + "/v1.0/users/" + user + "/followedSites/" + string(r.op)
}
