// Package testkit is the one test-support package, shared by tests: embedded
// NATS servers and clusters, the Graph simulator wired for a consumer, and
// the consumer binary as a child process. It also publishes requests, reads
// dead letters and stream counts, watches acknowledgements, and checks the
// consumer's invariant against what the simulator ended with.
//
// There is no global state: every constructor takes the test, registers its
// own cleanups and calls t.Helper(). Waiting is always polling a condition
// with a generous deadline (Eventually), never a bare sleep.
package testkit

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Site returns a well-formed site id numbered n (lower case, canonical), the
// same ids the package tests have always used.
func Site(n int) string {
	return fmt.Sprintf("contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-%012d,712a596e-90a1-49e3-9b48-bfa80bee8740", n)
}

// Sites returns Site(0) … Site(n-1).
func Sites(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = Site(i)
	}
	return out
}

// User returns a user id numbered n.
func User(n int) string { return fmt.Sprintf("user%04d@contoso.com", n) }

// Eventually polls cond every 20ms until it holds, and fails the test naming
// what it waited for if timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// poll is Eventually without failing: it reports whether cond held in time.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// servers that must come back on the same port after a restart.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// SyncBuffer collects a logger's output from many goroutines.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
