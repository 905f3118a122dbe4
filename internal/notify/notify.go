// Package notify is the one broadcast of "something changed" behind every blocking query
// (the catalog's, the CA roots', federation's): Changed hands out a channel that the next
// Notify closes, so any number of waiters wake at once and none is missed between reading
// the state and waiting.
package notify

import "sync"

// Watch is a broadcast: Notify wakes everyone waiting on a channel Changed returned before it.
// The zero value is not usable; use New.
type Watch struct {
	mu sync.Mutex
	ch chan struct{}
}

// New returns a Watch.
func New() *Watch { return &Watch{ch: make(chan struct{})} }

// Notify wakes everyone waiting on a channel returned by Changed before it.
func (w *Watch) Notify() {
	w.mu.Lock()
	close(w.ch)
	w.ch = make(chan struct{})
	w.mu.Unlock()
}

// Changed returns a channel closed at the next Notify. Read it before reading the state it
// guards, so that a change in between is not missed.
func (w *Watch) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}
