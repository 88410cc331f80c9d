package graphsim

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// listRoute matches GET /v1.0/users/{userId}/followedSites (segments
// case-insensitive, as route matches them) and returns the unescaped user.
func listRoute(u *url.URL) (string, bool) {
	parts := strings.Split(u.EscapedPath(), "/")
	if len(parts) != 5 || parts[0] != "" || !strings.EqualFold(parts[1], "v1.0") ||
		!strings.EqualFold(parts[2], "users") || !strings.EqualFold(parts[4], "followedSites") {
		return "", false
	}
	user, err := url.PathUnescape(parts[3])
	if err != nil || user == "" {
		return "", false
	}
	return user, true
}

// serveFollowedList answers a user's followed sites in Graph's shape,
// {"value":[site, …]}, sorted by id. It needs a token like every Graph
// call, but it is not recorded in Calls and is outside the budget, the
// latency and the injected faults: it is for people and tests looking at
// the state, and looking must not change what the consumer meets.
func (s *Server) serveFollowedList(w http.ResponseWriter, r *http.Request, user string) {
	rep := s.authorize(r.Header.Get("Authorization"))
	if rep == nil {
		rep = s.followedList(user)
	}
	if err := s.writeGraph(w, r, rep); err != nil {
		s.fail(fmt.Errorf("graphsim list followed sites: %w", err))
	}
}

// followedList builds the answer to serveFollowedList.
func (s *Server) followedList(user string) *reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(user)
	if s.faults.unknownUsers[key] {
		return &reply{err: &graphError{
			status:    http.StatusNotFound,
			code:      "Request_ResourceNotFound",
			innerCode: "itemNotFound",
			message:   fmt.Sprintf("Resource '%s' does not exist or one of its queried reference-property objects are not present.", user),
		}}
	}
	// Never nil: a user following nothing gets "value":[], as from Graph.
	entries := make([][]byte, 0, len(s.followed[key]))
	for _, site := range slices.Sorted(maps.Keys(s.followed[key])) {
		if info := s.infoLocked(site); info != nil {
			entries = append(entries, info.object(s.faults.upperCaseIDs))
			continue
		}
		// SetFollowed takes ids that need not parse; such an id is shown
		// as it was given.
		b, err := json.Marshal(struct {
			ID string `json:"id"`
		}{site})
		if err != nil {
			return &reply{err: &graphError{status: http.StatusInternalServerError, code: "generalException", message: err.Error()}}
		}
		entries = append(entries, b)
	}
	return &reply{code: http.StatusOK, value: entries}
}
