package handler

import "sync"

// mailbox carries deliveries from the Consume callback to the loop. It is
// a queue the loop empties in one go rather than a buffered channel: a
// channel sized for everything the process may hold would allocate that
// much up front, and the intake already bounds how much can be in it.
type mailbox struct {
	mu    sync.Mutex
	queue []delivery
	// ready is signalled when the queue stops being empty.
	ready chan struct{}
}

func newMailbox() *mailbox { return &mailbox{ready: make(chan struct{}, 1)} }

// put queues d; it never blocks on the loop.
func (m *mailbox) put(d delivery) {
	m.mu.Lock()
	m.queue = append(m.queue, d)
	first := len(m.queue) == 1
	m.mu.Unlock()
	if first {
		select {
		case m.ready <- struct{}{}:
		default:
		}
	}
}

// take returns everything queued, oldest first, and leaves spare (emptied)
// as the next queue, so the two slices take turns.
func (m *mailbox) take(spare []delivery) []delivery {
	clear(spare)
	m.mu.Lock()
	out := m.queue
	m.queue = spare[:0]
	m.mu.Unlock()
	return out
}
