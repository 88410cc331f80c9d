package graphsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// The "@oneDrive.action" values of a followingSites PATCH.
const (
	betaFollow   = "follow"
	betaUnfollow = "unfollow"
)

// decodeBetaBody returns the ids and actions of a followingSites PATCH
// body, {"value":[{"id":...,"@oneDrive.action":"follow"|"unfollow"}]}, in
// request order, or whatever it managed to read along with an error for a
// malformed body. readErr is readBody's error.
func decodeBetaBody(raw []byte, readErr error) (ids, actions []string, err error) {
	if readErr != nil {
		return nil, nil, readErr
	}
	var in struct {
		Value []struct {
			ID     *string `json:"id"`
			Action *string `json:"@oneDrive.action"`
		} `json:"value"`
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, nil, fmt.Errorf("decode body: %w: %w", err, errBody)
	}
	if len(in.Value) == 0 {
		return nil, nil, fmt.Errorf("body has no value entries: %w", errBody)
	}
	ids = make([]string, 0, len(in.Value))
	actions = make([]string, 0, len(in.Value))
	for i, v := range in.Value {
		if v.ID == nil || *v.ID == "" {
			return ids, actions, fmt.Errorf("value[%d] has no id: %w", i, errBody)
		}
		if v.Action == nil || (*v.Action != betaFollow && *v.Action != betaUnfollow) {
			return ids, actions, fmt.Errorf("value[%d] has no @oneDrive.action %q or %q: %w", i, betaFollow, betaUnfollow, errBody)
		}
		ids = append(ids, *v.ID)
		actions = append(actions, *v.Action)
	}
	return ids, actions, nil
}

// applyBetaLocked answers a followingSites PATCH as the beta page shows:
// 200 listing every site (followed ones in full, unfollowed ones as
// {"id"} only) when all applied, else 207 listing only the failures. Faults
// apply as to add (follows) and remove (unfollows) calls; a follow left out
// by OmitSites makes the answer a 207 that does not mention it.
func (s *Server) applyBetaLocked(user string, ids, actions []string, chaos *chaosVerdict) *reply {
	userKey := strings.ToLower(user)
	upper := s.faults.upperCaseIDs
	done := make([][]byte, 0, len(ids))
	failures := make([][]byte, 0, 1)
	omitted := false
	var first *siteID
	var seen keySet
	for i, id := range ids {
		op := opAdd
		if actions[i] == betaUnfollow {
			op = opRemove
		}
		entry, out, info := s.applySiteLocked(op, userKey, id, &seen, chaos)
		if info != nil && first == nil {
			first = &info.site
		}
		switch {
		case out == siteOmitted:
			omitted = true
		case out == siteFailed:
			failures = append(failures, entry)
		case out == siteApplied && op == opAdd:
			done = append(done, entry)
		case out == siteApplied:
			done = append(done, idEntry(echoID(id, info, upper)))
		}
	}
	if len(failures) == 0 && !omitted {
		return &reply{code: http.StatusOK, value: done}
	}
	return &reply{code: http.StatusMultiStatus, value: s.withExtraErrorLocked(failures, first)}
}

// idEntry is {"id":id}, how a beta 200 names an unfollowed site.
func idEntry(id string) []byte {
	b, err := json.Marshal(struct {
		ID string `json:"id"`
	}{id})
	if err != nil {
		panic("graphsim: encode id entry: " + err.Error())
	}
	return b
}
