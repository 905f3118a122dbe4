package reconciler

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	mesh "github.com/meshgit/mesh"
)

// publisher hands the FSM's served snapshot to the Publisher (xDS) and keeps a copy on disk, so
// that a restarted server serves at once what it served last, before Raft has caught up with its
// peers or the leader has reached Git.
type publisher struct {
	s *Server

	mu         sync.Mutex
	served     *mesh.Snapshot
	servedAt   time.Time
	cacheIndex uint64 // the Raft index of the snapshot loaded from disk; older FSM states are not published
	lastErr    error
	waiters    []chan struct{}
}

func (p *publisher) init(s *Server) { p.s = s }

func (p *publisher) cacheFile() string { return filepath.Join(p.s.cfg.DataDir, "served.json.gz") }

type servedCache struct {
	Index    uint64          `json:"index"`
	Snapshot json.RawMessage `json:"snapshot"`
}

// loadCache publishes the snapshot saved by the last run, if any.
func (p *publisher) loadCache() {
	b, err := os.ReadFile(p.cacheFile())
	if err != nil {
		if !os.IsNotExist(err) {
			p.s.log.Warn("read served snapshot cache", "err", err)
		}
		return
	}
	c, err := readCache(b)
	if err != nil {
		p.s.log.Warn("served snapshot cache unusable, waiting for raft", "err", err)
		return
	}
	snap, err := mesh.Decode(c.Snapshot)
	if err != nil {
		p.s.log.Warn("served snapshot cache unusable, waiting for raft", "err", err)
		return
	}
	p.cacheIndex = c.Index
	p.publish(snap, false)
	p.s.log.Info("serving the last snapshot from disk", "version", snap.Version, "commit", shortSHA(snap.Commit))
}

func readCache(b []byte) (*servedCache, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(io.LimitReader(zr, maxSnapshotJSON))
	if err != nil {
		return nil, err
	}
	var c servedCache
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// run publishes every change of the FSM's served snapshot until ctx ends.
func (p *publisher) run(ctx context.Context) {
	for {
		p.check()
		select {
		case <-ctx.Done():
			return
		case <-p.s.fsm.changed:
		}
	}
}

func (p *publisher) check() {
	st := p.s.fsm.state()
	if st.served == nil || st.servedIndex < p.cacheIndex {
		return
	}
	p.mu.Lock()
	cur := p.served
	same := cur == st.served || cur != nil && cur.Version == st.served.Version && cur.Commit == st.served.Commit
	if same {
		p.served = st.served // the FSM's copy; nothing changed for the proxies
	}
	p.mu.Unlock()
	if same {
		return
	}
	if p.publish(st.served, true) {
		p.saveCache(st.servedIndex, st.served)
	}
}

func (p *publisher) publish(snap *mesh.Snapshot, fromFSM bool) bool {
	var err error
	if pub := p.s.cfg.Publisher; pub != nil {
		err = pub.SetSnapshot(snap)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastErr = err
	if err != nil {
		p.s.metrics.publishErrors.Inc()
		p.s.log.Error("publish snapshot", "version", snap.Version, "err", err)
		return false
	}
	p.served, p.servedAt = snap, time.Now()
	p.s.metrics.setServed(snap)
	for _, w := range p.waiters {
		close(w)
	}
	p.waiters = nil
	if fromFSM {
		p.s.log.Info("serving snapshot", "version", snap.Version, "commit", shortSHA(snap.Commit))
	}
	return true
}

func (p *publisher) saveCache(index uint64, snap *mesh.Snapshot) {
	raw, err := snap.Encode()
	if err == nil {
		var b []byte
		if b, err = json.Marshal(servedCache{Index: index, Snapshot: raw}); err == nil {
			err = writeFileAtomic(p.cacheFile(), compress(b))
		}
	}
	if err != nil {
		p.s.log.Warn("save served snapshot", "err", err)
	}
}

func (p *publisher) current() *mesh.Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served
}

func (p *publisher) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// changed returns a channel closed at the next publication.
func (p *publisher) changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := make(chan struct{})
	p.waiters = append(p.waiters, c)
	return c
}

func writeFileAtomic(name string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), filepath.Base(name)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("replace %s: %w", name, err)
	}
	return nil
}
