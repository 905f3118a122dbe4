package reconciler

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// StorageError is a failed write to the data directory (a full disk, a read-only file system,
// an I/O error), reported in GET /v1/status and the mesh_storage_errors_total metric until a
// later write of the same kind succeeds.
type StorageError struct {
	Op    string    `json:"op"` // raft-log, raft-stable, raft-snapshot, served-cache
	Error string    `json:"error"`
	Time  time.Time `json:"time"`
}

// storageHealth records the storage errors of one server.
type storageHealth struct {
	mu      sync.Mutex
	current map[string]StorageError
	count   func(op string) // the metric; set once metrics exist
	// fault, when set (tests), fails writes of op with the error it returns.
	fault func(op string) error
}

func (h *storageHealth) record(op string, err error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		delete(h.current, op)
		return nil
	}
	if h.current == nil {
		h.current = map[string]StorageError{}
	}
	h.current[op] = StorageError{Op: op, Error: err.Error(), Time: time.Now().UTC()}
	if h.count != nil {
		h.count(op)
	}
	return err
}

// write runs a write of kind op through the fault hook and records its outcome.
func (h *storageHealth) write(op string, f func() error) error {
	if h.fault != nil {
		if err := h.fault(op); err != nil {
			return h.record(op, err)
		}
	}
	return h.record(op, f())
}

func (h *storageHealth) errors() []StorageError {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]StorageError, 0, len(h.current))
	for _, e := range h.current {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Op < out[j].Op })
	return out
}

// healthLogStore records the errors of a raft.LogStore's writes.
type healthLogStore struct {
	raft.LogStore
	h *storageHealth
}

func (s healthLogStore) StoreLog(l *raft.Log) error {
	return s.h.write("raft-log", func() error { return s.LogStore.StoreLog(l) })
}

func (s healthLogStore) StoreLogs(ls []*raft.Log) error {
	return s.h.write("raft-log", func() error { return s.LogStore.StoreLogs(ls) })
}

func (s healthLogStore) DeleteRange(min, max uint64) error {
	return s.h.write("raft-log", func() error { return s.LogStore.DeleteRange(min, max) })
}

// healthStableStore records the errors of a raft.StableStore's writes.
type healthStableStore struct {
	raft.StableStore
	h *storageHealth
}

func (s healthStableStore) Set(k, v []byte) error {
	return s.h.write("raft-stable", func() error { return s.StableStore.Set(k, v) })
}

func (s healthStableStore) SetUint64(k []byte, v uint64) error {
	return s.h.write("raft-stable", func() error { return s.StableStore.SetUint64(k, v) })
}

// healthSnapshotStore records the errors of writing Raft snapshots.
type healthSnapshotStore struct {
	raft.SnapshotStore
	h *storageHealth
}

func (s healthSnapshotStore) Create(version raft.SnapshotVersion, index, term uint64, c raft.Configuration, ci uint64, t raft.Transport) (raft.SnapshotSink, error) {
	var sink raft.SnapshotSink
	err := s.h.write("raft-snapshot", func() (err error) {
		sink, err = s.SnapshotStore.Create(version, index, term, c, ci, t)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &healthSink{SnapshotSink: sink, h: s.h}, nil
}

type healthSink struct {
	raft.SnapshotSink
	h *storageHealth
}

func (s *healthSink) Write(p []byte) (n int, err error) {
	if s.h.fault != nil {
		if err := s.h.fault("raft-snapshot"); err != nil {
			return 0, s.h.record("raft-snapshot", err)
		}
	}
	n, err = s.SnapshotSink.Write(p)
	if err != nil {
		s.h.record("raft-snapshot", err)
	}
	return n, err
}

func (s *healthSink) Close() error {
	if s.h.fault != nil {
		if err := s.h.fault("raft-snapshot"); err != nil {
			s.SnapshotSink.Cancel()
			return s.h.record("raft-snapshot", err)
		}
	}
	return s.h.record("raft-snapshot", s.SnapshotSink.Close())
}

// guardLogStore refuses to drop log entries the state machine has applied from the end of the
// log: Raft does that only when another leader's log conflicts with this one (a server absorbed
// by a cluster other than the one it applied from), and the state machine cannot take entries
// back. Compaction (dropping applied entries from the start, with newer ones kept) passes.
type guardLogStore struct {
	raft.LogStore
	applied  func() uint64
	diverged func(error)
}

func (s guardLogStore) DeleteRange(min, max uint64) error {
	last, err := s.LogStore.LastIndex()
	if err != nil {
		return err
	}
	if max >= last && min <= s.applied() {
		err := fmt.Errorf("%w: Raft would drop entries %d to %d, and this server's state machine applied up to %d: "+
			"its log diverged from the cluster's; %s", ErrClusterMismatch, min, max, s.applied(), recovery)
		s.diverged(err)
		return err
	}
	return s.LogStore.DeleteRange(min, max)
}
