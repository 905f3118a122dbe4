package reconciler

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/meshgit/mesh/compiler"
)

// Step names one step of the reconcile loop.
type Step string

// The steps, in order.
const (
	StepFetch   Step = "fetch"   // bring the repository up to date
	StepResolve Step = "resolve" // resolve the ref to a commit
	StepRead    Step = "read"    // read the mesh files of the commit
	StepCompile Step = "compile" // compile them
	StepApply   Step = "apply"   // replicate the result through Raft
)

// StepError is a failed step. Retry says whether the loop tries again after a backoff (the
// network, Raft) or records the failure and waits for a new commit (the configuration).
type StepError struct {
	Step   Step
	Commit string
	Retry  bool
	Err    error
}

func (e *StepError) Error() string {
	if e.Commit != "" {
		return fmt.Sprintf("%s %s: %v", e.Step, shortSHA(e.Commit), e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Step, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// reconcileLoop runs on the leader: watch the source, and reconcile at once when it says the ref
// may have moved, on every poll, and after a backoff when a retryable step failed.
func (s *Server) reconcileLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); s.src.watch(ctx, s.Kick) }()
	s.Kick()
	attempt := 0
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-retry:
		}
		retry = nil
		err := s.reconcile(ctx)
		var se *StepError
		switch {
		case err == nil:
			attempt = 0
		case ctx.Err() != nil:
			return
		case errors.As(err, &se) && !se.Retry:
			attempt = 0
			s.metrics.stepErrors.WithLabelValues(string(se.Step)).Inc()
			s.log.Warn("commit rejected, serving the last good snapshot", "err", err)
		default:
			step := "unknown"
			if se != nil {
				step = string(se.Step)
			}
			s.metrics.stepErrors.WithLabelValues(step).Inc()
			d := backoff(attempt)
			attempt++
			s.log.Warn("reconcile failed, retrying", "err", err, "in", d)
			retry = time.After(d)
		}
	}
}

// reconcile makes one pass: fetch, resolve, and compile and apply the commit if it is new.
func (s *Server) reconcile(ctx context.Context) error {
	seen := time.Now()
	s.metrics.fetches.Inc()
	repo, err := s.src.open(ctx)
	if err != nil {
		return &StepError{Step: StepFetch, Retry: true, Err: err}
	}
	hash, err := compiler.Resolve(repo, s.src.ref())
	if err != nil {
		return &StepError{Step: StepResolve, Retry: true, Err: err}
	}
	commit := hash.String()
	st := s.fsm.state()
	if commit == st.lastCommit {
		return nil
	}
	s.log.Info("new commit", "commit", shortSHA(commit), "ref", s.src.ref())
	forced := isForced(repo, st.lastCommit, hash)

	files, err := compiler.ReadCommit(repo, hash, s.cfg.Dir)
	if err != nil {
		// A commit without the mesh directory is a configuration problem of that commit.
		return s.reject(commit, StepRead, []PosError{{Msg: err.Error()}})
	}
	policies, err := compiler.ReadPolicyCommit(repo, hash, s.cfg.Dir)
	if err != nil {
		return s.reject(commit, StepRead, []PosError{{Msg: err.Error()}})
	}
	t0 := time.Now()
	snap, err := s.cfg.Compile(ctx, files, policies)
	s.metrics.compileDuration.Observe(time.Since(t0).Seconds())
	if err != nil {
		if !errors.Is(err, compiler.ErrInvalid) {
			return &StepError{Step: StepCompile, Commit: commit, Retry: true, Err: err}
		}
		return s.reject(commit, StepCompile, posErrors(err))
	}
	snap.Commit = commit // not part of the version: a sealed snapshot stays sealed
	if snap.Version == "" {
		if err := snap.Seal(); err != nil {
			return &StepError{Step: StepCompile, Commit: commit, Retry: true, Err: err}
		}
	}
	data, err := snap.Encode()
	if err != nil {
		return &StepError{Step: StepCompile, Commit: commit, Retry: true, Err: err}
	}
	blob := compress(data)
	key := sha256.Sum256(blob)
	s.fsm.local.Store(key, snap)
	defer s.fsm.local.Delete(key)
	cmd := snapshotCmd{Version: snap.Version, Commit: commit, Time: time.Now().UTC(), Forced: forced}
	if err := s.apply(cmdSnapshot, cmd, blob); err != nil {
		return &StepError{Step: StepApply, Commit: commit, Retry: true, Err: err}
	}
	s.metrics.commitToApply.Observe(time.Since(seen).Seconds())
	s.metrics.lastSuccess.SetToCurrentTime()
	s.log.Info("applied", "version", snap.Version, "commit", shortSHA(commit), "forced", forced, "took", time.Since(seen).Round(time.Millisecond))
	return nil
}

// reject records a commit that does not compile and returns the non-retryable step error.
func (s *Server) reject(commit string, step Step, errs []PosError) error {
	f := Failure{Commit: commit, Time: time.Now().UTC(), Errors: errs}
	if err := s.apply(cmdFailure, f, nil); err != nil {
		return &StepError{Step: StepApply, Commit: commit, Retry: true, Err: err}
	}
	return &StepError{Step: step, Commit: commit, Err: fmt.Errorf("%d error(s), first: %s", len(errs), errs[0].Msg)}
}

func posErrors(err error) []PosError {
	var list compiler.Errors
	if errors.As(err, &list) && len(list) > 0 {
		out := make([]PosError, len(list))
		for i, e := range list {
			out[i] = PosError{Pos: e.Pos, Msg: e.Msg}
		}
		return out
	}
	var one *compiler.Error
	if errors.As(err, &one) {
		return []PosError{{Pos: one.Pos, Msg: one.Msg}}
	}
	return []PosError{{Msg: err.Error()}}
}

// isForced reports whether next does not descend from prev (a force-push or a reset): prev is
// then unknown to the repository or not an ancestor of next.
func isForced(repo *git.Repository, prev string, next plumbing.Hash) bool {
	if prev == "" {
		return false
	}
	pc, err := repo.CommitObject(plumbing.NewHash(prev))
	if err != nil {
		return true
	}
	nc, err := repo.CommitObject(next)
	if err != nil {
		return false
	}
	ok, err := pc.IsAncestor(nc)
	return err == nil && !ok
}
