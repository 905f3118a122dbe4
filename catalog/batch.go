package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// ApplyBatch applies cs in order as one Raft entry at index: each command sees the state the
// commands before it made, exactly as if each were its own entry, and gets its own result: one
// that fails changes nothing and leaves the others applied. Like Apply, it is deterministic.
func (s *State) ApplyBatch(index uint64, cs []Command) (*State, []error) {
	if s == nil {
		s = Empty()
	}
	errs := make([]error, len(cs))
	// A private copy (its maps still shared) that the batch's commands change: a map they copy
	// once is theirs, and changed in place by the commands after (see owned). Commands check
	// their input before they change anything, so a failing one leaves it as it was.
	w := s.clone(s.index)
	w.own = &owned{entries: map[string]bool{}, nodeMaps: map[string]bool{}}
	cur, changed := w, false
	for i, c := range cs {
		ns, err := cur.Apply(index, c)
		if err != nil {
			errs[i] = err
			continue
		}
		changed = changed || ns != cur
		cur = ns
	}
	if !changed {
		return s, errs
	}
	out := cur.clone(cur.index)
	out.own = nil // published: later changes copy again
	return out, errs
}

// DecodeBatch decodes the commands of one batch entry (a JSON list of commands).
func DecodeBatch(b []byte) ([]Command, error) {
	var cs []Command
	if err := json.Unmarshal(b, &cs); err != nil {
		return nil, fmt.Errorf("%w: batch: %v", ErrBadCommand, err)
	}
	if len(cs) == 0 {
		return nil, fmt.Errorf("%w: empty batch", ErrBadCommand)
	}
	return cs, nil
}

// CommitBatchFunc writes cs as one Raft entry and returns each command's result (errs has
// len(cs) entries), or err if the entry was not committed at all.
type CommitBatchFunc func(ctx context.Context, cs []Command) (errs []error, err error)

// Batcher coalesces the catalog commands committed concurrently on the leader into fewer Raft
// entries: while one entry is being committed, the commands that arrive wait, and go together
// in the next one (at most Max). Each caller gets its own command's result. A command waits for
// no timer: alone, it is committed at once.
type Batcher struct {
	commit CommitBatchFunc
	max    int

	mu      sync.Mutex
	queue   []*queued
	running bool
}

type queued struct {
	c    Command
	done chan error
}

// NewBatcher returns a batcher that writes through commit, max commands an entry (default 512).
func NewBatcher(commit CommitBatchFunc, max int) *Batcher {
	if max <= 0 {
		max = 512
	}
	return &Batcher{commit: commit, max: max}
}

// Commit commits c, in a batch with the commands committed concurrently, and returns its
// result. If ctx ends first, Commit returns ctx's error, and c may still be committed.
func (b *Batcher) Commit(ctx context.Context, c Command) error {
	q := &queued{c: c, done: make(chan error, 1)}
	b.mu.Lock()
	b.queue = append(b.queue, q)
	if !b.running {
		b.running = true
		go b.flush()
	}
	b.mu.Unlock()
	select {
	case err := <-q.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flush commits the queue, a batch at a time, until it is empty. One runs at a time, so that
// commands are committed in the order they arrived.
func (b *Batcher) flush() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.max)
		if n == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		batch := b.queue[:n:n]
		b.queue = b.queue[n:]
		b.mu.Unlock()
		cs := make([]Command, n)
		for i, q := range batch {
			cs[i] = q.c
		}
		errs, err := b.commit(context.Background(), cs)
		for i, q := range batch {
			switch {
			case err != nil:
				q.done <- err
			case i < len(errs):
				q.done <- errs[i]
			default:
				q.done <- fmt.Errorf("%w: batch result has %d results for %d commands", ErrBadCommand, len(errs), n)
			}
		}
	}
}
