package graphsim

import (
	"net/http"
	"strings"
	"time"
)

// NotProvisioned is how the simulator answers the calls for a user whose
// account Graph cannot see yet (see ProvisionLater).
type NotProvisioned int

// The answers Graph gives for a user created moments ago.
const (
	// MysiteNotFound answers 404 itemNotFound "User's mysite not found",
	// as for a user whose OneDrive is not provisioned yet.
	MysiteNotFound NotProvisioned = iota
	// BeingProvisioned answers 400 invalidRequest with the detailed code
	// resourceBeingProvisioned: not a 404, recognised by its code.
	BeingProvisioned
)

// provisioning is a user not visible yet: for its next calls calls, and
// until visibleAt, whichever ends later.
type provisioning struct {
	calls     int
	visibleAt time.Time
	answer    NotProvisioned
}

// ProvisionLater makes userID's calls answer as for a new user Graph cannot
// see yet (answer), for its next calls calls and until visibleAt, whichever
// ends later; then the user is visible and calls proceed normally. Only
// calls that get past the call-wide faults (throttling, outages) count.
// calls <= 0 with a zero visibleAt makes the user visible at once;
// ClearFaults undoes it too.
func (s *Server) ProvisionLater(userID string, calls int, visibleAt time.Time, answer NotProvisioned) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(userID)
	if calls <= 0 && visibleAt.IsZero() {
		delete(s.faults.provisioning, key)
		return
	}
	s.faults.provisioning[key] = provisioning{calls: calls, visibleAt: visibleAt, answer: answer}
}

// NotProvisionedAnswers is how many calls for userID were answered as for
// a user not provisioned yet.
func (s *Server) NotProvisionedAnswers(userID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults.notProvisioned[strings.ToLower(userID)]
}

// provisioningLocked answers a call for a user not visible yet, or returns
// nil once the user is visible (and forgets the fault).
func (s *Server) provisioningLocked(user string, now time.Time) *reply {
	key := strings.ToLower(user)
	p, ok := s.faults.provisioning[key]
	if !ok {
		return nil
	}
	if p.calls <= 0 && !now.Before(p.visibleAt) {
		delete(s.faults.provisioning, key)
		return nil
	}
	p.calls--
	s.faults.provisioning[key] = p
	s.faults.notProvisioned[key]++
	if p.answer == BeingProvisioned {
		return &reply{err: &graphError{
			status:    http.StatusBadRequest,
			code:      "invalidRequest",
			innerCode: "resourceBeingProvisioned",
			message:   "The user's resources are being provisioned.",
		}}
	}
	return &reply{err: &graphError{
		status:  http.StatusNotFound,
		code:    "itemNotFound",
		message: "User's mysite not found",
	}}
}
