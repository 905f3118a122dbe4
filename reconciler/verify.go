package reconciler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	mesh "github.com/meshgit/mesh"
)

// A follower builds each new snapshot by applying the leader's delta to its head (fsm.go), and
// does not recompute its version there: that would add 0.2 s at 10k services to every Raft
// apply. The publisher makes the check instead, before it serves the snapshot, on its own
// goroutine: the FSM never waits for it, and since the publisher always looks at the FSM's
// newest state, snapshots superseded while it was busy are neither checked nor served. A
// snapshot that does not hash to its version is not served — the last good one stays — and is
// fetched whole from a peer, checked, and put in its place (fsm.repair).

// verified checks, once, the FSM's served snapshot when it was built from a delta, and reports
// whether it may be served. When it may not, it keeps serving the last good snapshot (with the
// newest catalog), records why in verifyErr, and starts a repair.
func (p *publisher) verified(ctx context.Context, st *state) bool {
	start := time.Now()
	err, first := st.servedCheck.verify(st.served)
	if first {
		p.s.metrics.verifyDuration.Observe(time.Since(start).Seconds())
	}
	if err == nil {
		if first {
			p.mu.Lock()
			p.verifyErr = ""
			p.mu.Unlock()
		}
		return true
	}
	p.mu.Lock()
	good, cat := p.served, p.catalog
	p.mu.Unlock()
	if first {
		p.s.metrics.verifyFailures.Inc()
		serving := "nothing served yet"
		if good != nil {
			serving = "still serving " + good.Version
		}
		p.s.log.Error("not serving a snapshot that does not hash to its version; fetching it whole from a peer",
			"version", st.served.Version, "commit", shortSHA(st.served.Commit), "serving", serving, "err", err)
		p.setVerifyErr(fmt.Sprintf("%v: not served, %s; fetching it from a peer", err, serving))
	}
	if good != nil && cat != st.catalog {
		p.publish(good, st.catalog, false)
	}
	p.startRepair(ctx, st.served)
	return false
}

func (p *publisher) setVerifyErr(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.verifyErr = msg
}

func (p *publisher) verifyError() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.verifyErr
}

// startRepair repairs bad in the background unless a repair runs already; that one pokes the
// publisher when it ends, so a snapshot found bad meanwhile gets its own.
func (p *publisher) startRepair(ctx context.Context, bad *mesh.Snapshot) {
	if !p.repairing.CompareAndSwap(false, true) {
		return
	}
	p.bg.Go(func() {
		defer p.s.fsm.poke()
		defer p.repairing.Store(false)
		p.repair(ctx, bad)
	})
}

// repair fetches bad's version whole from a peer until one answers with a copy that hashes to
// it, then puts it in the FSM's state in bad's place. It stops when the FSM no longer serves
// bad (a newer snapshot superseded it: the publisher checks that one) or ctx ends. The retries
// back off to every 30 s; a server that no peer can help (every copy is bad, or it is alone)
// keeps serving its last good snapshot until an operator replaces its data directory (mesh
// status says so).
func (p *publisher) repair(ctx context.Context, bad *mesh.Snapshot) {
	for attempt := 0; ; attempt++ {
		if p.s.fsm.state().served != bad {
			return
		}
		good, from, err := p.s.fetchSnapshot(ctx, bad.Version, bad.Commit)
		if err == nil {
			if p.s.fsm.repair(bad, good) {
				p.s.metrics.snapshotRepairs.Inc()
				p.s.log.Info("repaired a snapshot with the copy of a peer", "version", good.Version, "commit", shortSHA(good.Commit), "from", from)
				p.setVerifyErr(fmt.Sprintf("%v: %s built from a delta did not hash to its version; replaced by the copy of %s",
					ErrSnapshotMismatch, good.Version, from))
			}
			return
		}
		retry := backoff(attempt)
		p.s.log.Warn("fetch a snapshot to repair it", "version", bad.Version, "err", err, "retry", retry)
		p.setVerifyErr(fmt.Sprintf("%v: %s built from a delta does not hash to its version and is not served; "+
			"no peer gave a good copy (%v), retrying in %s; if this lasts, restart this server with an empty data directory",
			ErrSnapshotMismatch, bad.Version, err, retry))
		if !sleepCtx(ctx, retry) {
			return
		}
	}
}

// fetchSnapshot fetches version v of commit from the leader, or else another server of the
// cluster, over the servers' authenticated HTTP API, and returns the first copy that hashes to
// v, and the address it came from.
func (s *Server) fetchSnapshot(ctx context.Context, v, commit string) (*mesh.Snapshot, string, error) {
	var addrs []string
	if l := s.leaderHTTP(); l != "" {
		addrs = append(addrs, l)
	}
	var others []string
	for id, m := range s.fsm.state().servers {
		if id != s.id && m.HTTP != "" && !slices.Contains(addrs, m.HTTP) {
			others = append(others, m.HTTP)
		}
	}
	slices.Sort(others)
	var errs []error
	for _, addr := range append(addrs, others...) {
		if addr == s.httpAdv {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		snap, err := s.peerClient(addr).Snapshot(cctx, v)
		cancel()
		if err == nil {
			err = checkFetched(snap, v, commit)
		}
		if err == nil {
			return snap, addr, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	if len(errs) == 0 {
		return nil, "", errors.New("no other server known")
	}
	return nil, "", errors.Join(errs...)
}

// checkFetched checks that a snapshot fetched from a peer is version v of commit.
func checkFetched(snap *mesh.Snapshot, v, commit string) error {
	if snap.Version != v || snap.Commit != commit {
		return fmt.Errorf("got %s@%s, want %s@%s", snap.Version, shortSHA(snap.Commit), v, shortSHA(commit))
	}
	got, err := snap.ComputeVersion()
	if err != nil {
		return err
	}
	if got != v {
		return fmt.Errorf("%w: the peer's copy of %s hashes to %s", ErrSnapshotMismatch, v, got)
	}
	return nil
}
