package reconciler

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/compiler"
)

// Step names one step of the reconcile loop.
type Step string

// The steps, in order.
const (
	StepFetch   Step = "fetch"   // bring the repository up to date
	StepResolve Step = "resolve" // resolve the ref to a commit
	StepVerify  Step = "verify"  // check the commit's signature (with --verify-commits)
	StepRead    Step = "read"    // read the mesh files of the commit
	StepCompile Step = "compile" // compile them
	StepCheck   Step = "check"   // check the snapshot against the cluster (the CA's trust domain)
	StepApply   Step = "apply"   // replicate the result through Raft
)

// StepError is a failed step. Retry says whether the loop tries again after a backoff (the
// network, Raft, a compiler failure) or records the failure and waits for a new commit (the
// configuration). Record says whether a retried failure is recorded in the cluster's status
// (lastError) before the retry: the source and the compiler, not Raft itself.
type StepError struct {
	Step   Step
	Commit string
	Retry  bool
	Record bool
	Err    error
}

func (e *StepError) Error() string {
	if e.Commit != "" {
		return fmt.Sprintf("%s %s: %v", e.Step, shortSHA(e.Commit), e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Step, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// Outcomes of a pass that changed nothing, matched by the loop with errors.Is.
var (
	// errNotYet means the head is a commit whose retry time has not come: a kick (a poll, a
	// webhook, a ref event elsewhere) must not make the loop retry a failing compilation hot.
	errNotYet = errors.New("the commit is held until its retry time")
	// errRecorded means a pass failed exactly as the failure the status already holds (a refused
	// commit checked again): nothing to record, log or count again.
	errRecorded = errors.New("failure already recorded")
)

// reconcileLoop runs on the leader: watch the source, and reconcile at once when it says the ref
// may have moved, on every poll, and after a backoff when a retryable step failed.
func (s *Server) reconcileLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); s.src.watch(ctx, s.Kick) }()
	s.Kick()
	attempt, failing := 0, "" // failed attempts in a row, at commit failing
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-retry:
			retry = nil
		}
		err := s.reconcile(ctx)
		var se *StepError
		switch {
		case err == nil:
			attempt, retry = 0, nil
		case errors.Is(err, errNotYet):
			// A timer set by the failure stays; a new leader, which has none, sets one.
			if f := s.fsm.state().lastError; retry == nil && f != nil {
				retry = time.After(time.Until(f.RetryAt))
			}
		case errors.Is(err, errRecorded):
			// Nothing new; a retry timer set by an earlier failure stays as it is.
		case ctx.Err() != nil:
			return
		case errors.As(err, &se) && !se.Retry:
			attempt, retry = 0, nil
			s.metrics.stepErrors.WithLabelValues(string(se.Step)).Inc()
			s.log.Warn("commit rejected, serving the last good snapshot", "err", err)
		default:
			step := "unknown"
			if se != nil {
				step = string(se.Step)
			}
			s.metrics.stepErrors.WithLabelValues(step).Inc()
			if se != nil && se.Commit != failing {
				attempt, failing = 0, se.Commit // a new commit starts its own backoff
			}
			d := retryDelay(se, attempt)
			attempt++
			if se != nil && se.Record {
				s.recordRetry(se, attempt, d)
			}
			s.log.Warn("reconcile failed, retrying", "err", err, "in", d, "attempt", attempt)
			retry = time.After(d)
		}
	}
}

// retryDelay is the backoff before attempt+1: a compiler failure is retried slowly (it is most
// likely a bug that the same input hits again), anything else from 100ms up to 30s.
func retryDelay(se *StepError, attempt int) time.Duration {
	if se != nil && se.Step == StepCompile {
		return min(time.Second<<min(attempt, 9), 5*time.Minute)
	}
	return backoff(attempt)
}

// recordRetry records a failure the loop retries by itself in the cluster's status, with when it
// tries next, so that /v1/status and mesh status show it on every server. The same source
// failure with the same backoff (at its 30s cap) is recorded once; a commit's failure is recorded
// at every retry, since its RetryAt is what keeps kicks from retrying it hot (every 5 minutes
// at the cap).
func (s *Server) recordRetry(se *StepError, attempts int, d time.Duration) {
	now := time.Now().UTC()
	f := Failure{Commit: se.Commit, Time: now, Step: se.Step, Errors: []PosError{{Msg: se.Err.Error()}},
		RetryAt: now.Add(d), Backoff: d.String(), Attempts: attempts}
	if p := s.fsm.state().lastError; f.Commit == "" && p != nil && p.Commit == "" && p.Step == f.Step && p.Backoff == f.Backoff && slices.Equal(p.Errors, f.Errors) {
		return
	}
	if err := s.apply(cmdFailure, f, nil); err != nil {
		s.log.Warn("record the failure in the status", "err", err)
	}
}

// reconcile makes one pass: fetch, resolve, and verify, compile, check and apply the commit if
// it is new.
func (s *Server) reconcile(ctx context.Context) error {
	seen := time.Now()
	s.metrics.fetches.Inc()
	repo, err := s.src.open(ctx)
	if err != nil {
		return &StepError{Step: StepFetch, Retry: true, Record: true, Err: err}
	}
	hash, err := compiler.Resolve(repo, s.src.ref())
	if err != nil {
		return &StepError{Step: StepResolve, Retry: true, Record: true, Err: err}
	}
	commit := hash.String()
	st := s.fsm.state()
	if done, err := upToDate(st, commit); done || err != nil {
		return err
	}
	if commit != st.lastCommit {
		s.log.Info("new commit", "commit", shortSHA(commit), "ref", s.src.ref())
	}
	forced := isForced(repo, st.lastCommit, hash)
	snap, err := s.build(ctx, repo, hash)
	if err != nil {
		return err
	}
	s.ensureCA(ctx, snap)
	t, cmd, blob, err := snapshotEntry(st.head, snap)
	if err != nil {
		return &StepError{Step: StepCompile, Commit: commit, Retry: true, Err: err}
	}
	cmd.Time, cmd.Forced = time.Now().UTC(), forced
	key := sha256.Sum256(blob)
	s.fsm.local.Store(key, snap)
	defer s.fsm.local.Delete(key)
	if err := s.apply(t, cmd, blob); err != nil {
		return &StepError{Step: StepApply, Commit: commit, Retry: true, Err: err}
	}
	s.metrics.commitToApply.Observe(time.Since(seen).Seconds())
	s.metrics.lastSuccess.SetToCurrentTime()
	s.log.Info("applied", "version", snap.Version, "commit", shortSHA(commit), "forced", forced, "took", time.Since(seen).Round(time.Millisecond))
	return nil
}

// ensureCA creates the cluster's CA for snap's trust domain if there is none yet, before snap is
// applied: the first snapshot is then published with the trust bundle, instead of every proxy
// being rendered again when the CA appears a moment later. A failure is logged and the CA's
// leader loop (ca.Lead) tries again.
func (s *Server) ensureCA(ctx context.Context, snap *mesh.Snapshot) {
	if s.fsm.state().ca != nil || snap.Mesh.TrustDomain == "" {
		return
	}
	if err := s.ca.Init(ctx, snap.Mesh.TrustDomain, nil); err != nil && !errors.Is(err, ca.ErrInitialized) && ctx.Err() == nil {
		s.log.Warn("ca init", "err", err)
	}
}

// snapshotEntry encodes snap for Raft: as a delta against head, the head every server holds,
// or whole when there is none.
func snapshotEntry(head, snap *mesh.Snapshot) (cmdType, snapshotCmd, []byte, error) {
	cmd := snapshotCmd{Version: snap.Version, Commit: snap.Commit}
	if head != nil {
		cmd.Base = head.Version
		blob, err := encodeDelta(mesh.Diff(head, snap))
		return cmdSnapshotDelta, cmd, blob, err
	}
	data, err := snap.Encode()
	if err != nil {
		return 0, cmd, nil, err
	}
	return cmdSnapshot, cmd, compress(data), nil
}

// upToDate reports whether commit needs no pass: it was applied, or it failed in a way that only
// a new commit changes. A commit is looked at again when the failure recorded since was the
// source's (which is now readable: the pass restores the commit's own outcome), when it failed
// verification (the trusted keys may have changed with a restart), and when the compiler failed
// on it, once its retry time has come (errNotYet before).
func upToDate(st *state, commit string) (bool, error) {
	if commit != st.lastCommit {
		return false, nil
	}
	f := st.lastError
	switch {
	case f == nil:
		return true, nil
	case f.Commit == "":
		return false, nil
	case f.Commit != commit:
		return true, nil
	case !f.RetryAt.IsZero():
		if time.Now().Before(f.RetryAt) {
			return true, errNotYet
		}
		return false, nil
	case f.Step == StepVerify:
		return false, nil
	}
	return true, nil
}

// build verifies, reads, compiles and checks one commit: a sealed snapshot, or the StepError
// that says why not (recorded in the cluster's status unless it is retried).
func (s *Server) build(ctx context.Context, repo *git.Repository, hash plumbing.Hash) (*mesh.Snapshot, error) {
	commit := hash.String()
	if err := s.verify(repo, hash); err != nil {
		return nil, err
	}
	files, err := compiler.ReadCommit(repo, hash, s.cfg.Dir)
	if err != nil {
		// A commit without the mesh directory is a configuration problem of that commit.
		return nil, s.reject(commit, StepRead, []PosError{{Msg: err.Error()}})
	}
	policies, err := compiler.ReadPolicyCommit(repo, hash, s.cfg.Dir)
	if err != nil {
		return nil, s.reject(commit, StepRead, []PosError{{Msg: err.Error()}})
	}
	t0 := time.Now()
	snap, err := s.compile(ctx, files, policies)
	s.metrics.compileDuration.Observe(time.Since(t0).Seconds())
	if err != nil {
		if !errors.Is(err, compiler.ErrInvalid) {
			// The compiler failed (or panicked): a bug, not the configuration. It is shown with
			// the commit and retried slowly, since a new binary or a transient cause may fix it.
			return nil, &StepError{Step: StepCompile, Commit: commit, Retry: true, Record: ctx.Err() == nil, Err: err}
		}
		return nil, s.reject(commit, StepCompile, posErrors(err))
	}
	snap.Commit = commit // not part of the version: a sealed snapshot stays sealed
	if snap.Version == "" {
		if err := snap.Seal(); err != nil {
			return nil, &StepError{Step: StepCompile, Commit: commit, Retry: true, Record: true, Err: err}
		}
	}
	if pe := s.trustDomainChange(snap); pe != nil {
		return nil, s.reject(commit, StepCheck, []PosError{*pe})
	}
	return snap, nil
}

// verify checks the commit's signature when the server has trusted keys: a commit that is not
// signed by one of them is refused before anything of it is read.
func (s *Server) verify(repo *git.Repository, hash plumbing.Hash) error {
	keys := s.cfg.VerifyCommits
	if keys == nil {
		return nil
	}
	commit := hash.String()
	c, err := repo.CommitObject(hash)
	if err != nil {
		return &StepError{Step: StepVerify, Commit: commit, Retry: true, Record: true, Err: err}
	}
	signer, err := keys.Verify(c)
	if err != nil {
		return s.reject(commit, StepVerify, []PosError{{Msg: fmt.Sprintf("%v (--verify-commits %s)", err, keys)}})
	}
	s.log.Info("commit signature verified", "commit", shortSHA(commit), "signer", signer.String())
	return nil
}

// compile runs the configured compiler, turning a panic into an ErrInternal error of this
// commit: a bug in the compiler must neither take the server down nor go unseen.
func (s *Server) compile(ctx context.Context, files, policies []compiler.File) (snap *mesh.Snapshot, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("compiler panic", "panic", r, "stack", string(debug.Stack()))
			snap, err = nil, fmt.Errorf("%w: panic: %v", compiler.ErrInternal, r)
		}
	}()
	return s.cfg.Compile(ctx, files, policies)
}

// trustDomainChange returns the error of a snapshot whose trust domain differs from the CA's:
// every certificate names the CA's trust domain, so serving it would break every mTLS handshake
// until certificates of the new one exist, which the CA cannot issue yet.
func (s *Server) trustDomainChange(snap *mesh.Snapshot) *PosError {
	st := s.fsm.state().ca
	if st == nil || st.TrustDomain == snap.Mesh.TrustDomain {
		return nil
	}
	pos := snap.Pos(mesh.PathTrustDomain)
	if !pos.IsValid() {
		pos = snap.Pos("mesh")
	}
	return &PosError{Pos: pos, Msg: fmt.Sprintf("mesh.trustDomain: %q differs from the trust domain of the cluster's CA, %q: "+
		"every certificate names %q, so serving this commit would break every mTLS handshake; the commit is held, not served. "+
		"A trust domain cannot change in place yet: set trustDomain back to %q, or migrate by starting a new cluster "+
		"(empty data directories) that serves %q and moving the workloads to it",
		snap.Mesh.TrustDomain, st.TrustDomain, st.TrustDomain, st.TrustDomain, snap.Mesh.TrustDomain)}
}

// reject records a commit that is not to be served and returns the non-retryable step error.
// The failure is not written again when the status already holds it (a commit that keeps failing
// verification is checked on every pass).
func (s *Server) reject(commit string, step Step, errs []PosError) error {
	if f := s.fsm.state().lastError; f != nil && f.Commit == commit && f.Step == step && slices.Equal(f.Errors, errs) && f.RetryAt.IsZero() {
		return errRecorded
	}
	f := Failure{Commit: commit, Time: time.Now().UTC(), Step: step, Errors: errs}
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
