package graphsim

import (
	"maps"
	"slices"
	"strings"
)

// AddSites makes ids known. Ids that are not "host,guid,guid" are kept but
// can never match, since malformed ids in requests always fail.
func (s *Server) AddSites(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		s.sites[lookupKey(id)] = true
	}
}

// Followed returns userID's followed sites as the sim holds them: sorted,
// canonical lower case. userID is matched case-insensitively.
func (s *Server) Followed(userID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.followed[strings.ToLower(userID)]))
}

// Users returns the users currently following at least one site, sorted,
// lower case.
func (s *Server) Users() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.followed))
}

// SetFollowed replaces userID's followed sites with ids (none clears them).
// The ids need not be known sites.
func (s *Server) SetFollowed(userID string, ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	user := strings.ToLower(userID)
	delete(s.followed, user)
	for _, id := range ids {
		s.followLocked(user, lookupKey(id))
	}
}

func (s *Server) followLocked(user, key string) {
	set := s.followed[user]
	if set == nil {
		set = make(map[string]bool)
		s.followed[user] = set
	}
	set[key] = true
}

// unfollowLocked drops key and forgets users left with nothing, so Users
// lists only users who follow something.
func (s *Server) unfollowLocked(user, key string) {
	set := s.followed[user]
	delete(set, key)
	if len(set) == 0 {
		delete(s.followed, user)
	}
}

// knownLocked says whether a well-formed site exists in the sim.
func (s *Server) knownLocked(key string) bool {
	return s.allowAnySite || s.sites[key]
}
