package main

import (
	"context"
	"errors"
	"sync"
)

var errNotYet = errors.New("not yet")

// readiness is a start-up step's result, read by /readyz.
type readiness struct {
	mu   sync.Mutex
	done bool
	err  error
}

func (r *readiness) set(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done, r.err = true, err
}

func (r *readiness) check(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.done {
		return errNotYet
	}
	return r.err
}
