package reconciler

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/commitsig"
	"github.com/meshgit/mesh/internal/commitsig/sigtest"
)

// statusOf returns the server's status through its HTTP API.
func statusOf(t testing.TB, s *Server) *Status {
	t.Helper()
	st, err := (&Client{Addr: s.HTTPAddr()}).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A compiler panic on one commit is recorded in lastError with the commit, the last good snapshot
// stays served, the commit is retried only after a backoff that kicks do not shorten, and a later
// good commit is served at once.
func TestCompilerPanicIsShownAndBackedOff(t *testing.T) {
	repo := newTestRepo(t)
	f0 := meshFiles(0)
	repo.commit(f0, "initial", false)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	var boomCalls atomic.Int32
	cache := compiler.NewCache()
	cfg.Compile = func(ctx context.Context, files, policies []compiler.File) (*mesh.Snapshot, error) {
		for _, f := range files {
			if f.Name == "boom.cue" {
				boomCalls.Add(1)
				panic("injected compiler panic")
			}
		}
		return compileWithPolicies(ctx, files, policies, cache)
	}
	s := startServer(t, cfg)
	v0 := versionOf(t, f0)
	if !waitServed(s, v0, 10*time.Second) {
		t.Fatalf("v0 not served")
	}

	shaBoom := repo.commit(merge(f0, map[string]string{"mesh/boom.cue": "package mesh\n"}), "boom", false)
	var st *Status
	waitFor(t, 5*time.Second, "the panic to be recorded", func() bool {
		st = statusOf(t, s)
		return st.LastError != nil && st.LastError.Commit == shaBoom
	})
	e := st.LastError
	if e.Step != StepCompile || e.RetryAt.IsZero() || e.Attempts != 1 || len(e.Errors) != 1 ||
		!strings.Contains(e.Errors[0].Msg, "panic: injected compiler panic") {
		t.Fatalf("lastError = %+v, want the compiler panic with a retry time", e)
	}
	if st.Version != v0 {
		t.Errorf("serving %s after the panic, want %s", st.Version, v0)
	}
	if h := e.Headline(time.Now()); !strings.Contains(h, "the compiler failed; retrying in") {
		t.Errorf("headline %q", h)
	}
	// Kicks (polls, webhooks, ref events) must not retry it hot.
	for range 5 {
		if err := (&Client{Addr: s.HTTPAddr(), Token: testToken}).Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// (Read the count before the clock: if the retry time has not come, no retry can have run.)
	if n := boomCalls.Load(); n != 1 && time.Now().Before(e.RetryAt) {
		t.Errorf("the panicking commit was compiled %d times before its retry time, despite the kicks; want once", n)
	}
	// It is retried after the backoff (1s), then backs off further (2s).
	waitFor(t, 5*time.Second, "the retry to be recorded", func() bool {
		st = statusOf(t, s)
		return st.LastError != nil && st.LastError.Attempts == 2
	})
	if n := boomCalls.Load(); n != 2 && time.Now().Before(st.LastError.RetryAt) {
		t.Errorf("compiled %d times by the second attempt", n)
	}
	if d := st.LastError.RetryAt.Sub(st.LastError.Time); d < 1500*time.Millisecond {
		t.Errorf("second retry scheduled %v after the failure, want a growing backoff", d)
	}

	f1 := merge(meshFiles(1), map[string]string{"mesh/boom.cue": ""})
	v1 := versionOf(t, f1)
	sha1 := repo.commit(f1, "fixed", false)
	waitFor(t, 5*time.Second, "the good commit to be served", func() bool {
		st = statusOf(t, s)
		return st.Version == v1 && st.Commit == sha1 && st.LastError == nil
	})
}

// A ref that does not exist is reported (not "nothing served yet" alone) and retried with
// backoff; once the ref appears it is served.
func TestMissingRefIsReportedThenServed(t *testing.T) {
	repo := newTestRepo(t)
	f0 := meshFiles(0)
	repo.commit(f0, "initial", false)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	cfg.Ref = "nosuch"
	s := startServer(t, cfg)
	var st *Status
	waitFor(t, 10*time.Second, "the missing ref to be reported", func() bool {
		st = statusOf(t, s)
		return st.LastError != nil && st.LastError.Attempts >= 2
	})
	e := st.LastError
	if e.Step != StepResolve || e.Commit != "" || e.RetryAt.IsZero() || len(e.Errors) != 1 || !strings.Contains(e.Errors[0].Msg, `"nosuch"`) {
		t.Fatalf("lastError = %+v, want the unresolved ref nosuch with a retry time", e)
	}
	if h := e.Headline(time.Now()); !strings.HasPrefix(h, "the ref cannot be resolved; retrying") {
		t.Errorf("headline %q", h)
	}
	if st.Version != "" {
		t.Errorf("serving %q", st.Version)
	}

	repo.git(repo.work, "push", "-q", "origin", "HEAD:nosuch")
	v0 := versionOf(t, f0)
	waitFor(t, 5*time.Second, "the new ref to be served", func() bool {
		st = statusOf(t, s)
		return st.Version == v0 && st.LastError == nil
	})
}

// A --repo that is not a Git repository is reported with the reason.
func TestNotARepositoryIsReported(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), nodeOpts{})
	s := startServer(t, cfg)
	var st *Status
	waitFor(t, 10*time.Second, "the bad repository to be reported", func() bool {
		st = statusOf(t, s)
		return st.LastError != nil
	})
	e := st.LastError
	if e.Step != StepFetch || e.RetryAt.IsZero() || len(e.Errors) != 1 || !strings.Contains(e.Errors[0].Msg, "repository does not exist") {
		t.Fatalf("lastError = %+v, want the missing repository with a retry time", e)
	}
}

// A commit that changes mesh.trustDomain once the CA exists is held with a positioned error that
// says how to migrate; the last good snapshot stays served, and reverting is served.
func TestTrustDomainChangeIsHeld(t *testing.T) {
	repo := newTestRepo(t)
	f0 := meshFiles(0)
	repo.commit(f0, "initial", false)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	s := startServer(t, cfg)
	v0 := versionOf(t, f0)
	if !waitServed(s, v0, 10*time.Second) {
		t.Fatalf("v0 not served")
	}
	waitFor(t, 10*time.Second, "the CA to be created", func() bool { return s.CA().State() != nil })

	moved := meshFiles(1)
	moved["mesh/mesh.cue"] = strings.Replace(moved["mesh/mesh.cue"], `"test.mesh"`, `"other.mesh"`, 1)
	sha := repo.commit(moved, "move the trust domain", false)
	var st *Status
	waitFor(t, 5*time.Second, "the trust-domain change to be held", func() bool {
		st = statusOf(t, s)
		return st.LastError != nil && st.LastError.Commit == sha
	})
	e := st.LastError
	if e.Step != StepCheck || len(e.Errors) != 1 {
		t.Fatalf("lastError = %+v", e)
	}
	pe := e.Errors[0]
	if pe.Pos.File != "mesh.cue" || pe.Pos.Line != 5 || pe.Pos.Col == 0 {
		t.Errorf("position %s, want mesh.cue:5 (trustDomain)", pe.Pos)
	}
	for _, want := range []string{`"other.mesh" differs`, `"test.mesh"`, "break every mTLS handshake", "set trustDomain back", "new cluster"} {
		if !strings.Contains(pe.Msg, want) {
			t.Errorf("message lacks %q: %s", want, pe.Msg)
		}
	}
	if st.Version != v0 {
		t.Errorf("serving %s, want %s", st.Version, v0)
	}
	if got := s.CA().State().TrustDomain; got != "test.mesh" {
		t.Errorf("CA trust domain %q", got)
	}

	f2 := meshFiles(2)
	v2 := versionOf(t, f2)
	repo.commit(f2, "back to test.mesh", false)
	waitFor(t, 5*time.Second, "the reverted commit to be served", func() bool {
		st = statusOf(t, s)
		return st.Version == v2 && st.LastError == nil
	})
}

// signedCommit writes files, commits them signed (sign makes the commit in the work tree) and
// pushes to origin's main; it returns the commit's SHA.
func (r *testRepo) signedCommit(files map[string]string, sign func() string) string {
	r.t.Helper()
	r.stage(files)
	sha := sign()
	r.git(r.work, "push", "-q", "origin", sha+":refs/heads/main")
	return sha
}

// With --verify-commits (an allowed_signers file and an OpenPGP keyring), commits that are
// unsigned or signed by unknown keys are refused before they are compiled, with the commit and
// the reason in lastError, and the last good snapshot stays served; commits signed by a trusted
// SSH or OpenPGP key are served.
func TestVerifyCommits(t *testing.T) {
	sigtest.NeedSSHKeygen(t)
	keys := t.TempDir()
	alice := sigtest.NewSSHKey(t, keys, "alice@example.com")
	mallory := sigtest.NewSSHKey(t, keys, "mallory@example.com")
	bob := sigtest.NewPGPKey(t, "Bob", "bob@example.com")
	eve := sigtest.NewPGPKey(t, "Eve", "eve@example.com")
	signers := filepath.Join(keys, "allowed_signers")
	ring := filepath.Join(keys, "bob.asc")
	os.WriteFile(signers, []byte(alice.AllowedSigner(`namespaces="git"`)), 0o644)
	os.WriteFile(ring, []byte(bob.ArmoredPublic(t)), 0o644)
	trusted, err := commitsig.Load(signers, ring)
	if err != nil {
		t.Fatal(err)
	}

	repo := newTestRepo(t)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	cfg.VerifyCommits = trusted
	x, xdsAddr := attachXDS(t, &cfg)
	var mu sync.Mutex
	compiled := map[string]bool{} // services.cue contents the compiler saw
	cache := compiler.NewCache()
	cfg.Compile = func(ctx context.Context, files, policies []compiler.File) (*mesh.Snapshot, error) {
		mu.Lock()
		for _, f := range files {
			if f.Name == "services.cue" {
				compiled[string(f.Data)] = true
			}
		}
		mu.Unlock()
		return compileWithPolicies(ctx, files, policies, cache)
	}
	s := startServer(t, cfg)
	dialXDS(t, xdsAddr, "web-1")

	sshSigned := func(k *sigtest.SSHKey) func() string {
		return func() string {
			repo.git(repo.work, append(k.GitArgs(), "commit", "-q", "-S", "-m", "ssh")...)
			return repo.git(repo.work, "rev-parse", "HEAD")
		}
	}
	pgp := func(k *sigtest.PGPKey) func() string {
		return func() string { return sigtest.CommitPGP(t, repo.work, k, "openpgp") }
	}
	unsigned := func() string {
		repo.git(repo.work, "commit", "-q", "-m", "unsigned")
		return repo.git(repo.work, "rev-parse", "HEAD")
	}
	served := ""
	refused := func(n int, sign func() string, want ...string) {
		t.Helper()
		sha := repo.signedCommit(meshFiles(n), sign)
		var st *Status
		waitFor(t, 5*time.Second, "the commit to be refused", func() bool {
			st = statusOf(t, s)
			return st.LastError != nil && st.LastError.Commit == sha
		})
		e := st.LastError
		if e.Step != StepVerify || len(e.Errors) != 1 {
			t.Fatalf("lastError = %+v, want a verification failure", e)
		}
		for _, w := range append(want, "--verify-commits "+signers+","+ring) {
			if !strings.Contains(e.Errors[0].Msg, w) {
				t.Errorf("lastError %q lacks %q", e.Errors[0].Msg, w)
			}
		}
		if st.Version != served {
			t.Errorf("serving %q after a refused commit, want %q", st.Version, served)
		}
		mu.Lock()
		defer mu.Unlock()
		if compiled[meshFiles(n)["mesh/services.cue"]] {
			t.Errorf("the refused commit %d was compiled", n)
		}
	}
	accepted := func(n int, sign func() string) {
		t.Helper()
		sha := repo.signedCommit(meshFiles(n), sign)
		v := versionOf(t, meshFiles(n))
		waitFor(t, 5*time.Second, "the signed commit to be served", func() bool {
			st := statusOf(t, s)
			return st.Version == v && st.Commit == sha && st.LastError == nil
		})
		waitFor(t, 10*time.Second, "the proxy to ACK it", func() bool { return acked(x, "web-1", v) })
		served = v
	}

	refused(1, unsigned, "commit is not signed")
	refused(2, sshSigned(mallory), "untrusted key", ssh.FingerprintSHA256(mallory.Public))
	refused(3, pgp(eve), "untrusted key", strings.ToUpper(eve.Entity.PrimaryKey.KeyIdString()))
	accepted(4, sshSigned(alice))
	refused(5, unsigned, "commit is not signed")
	refused(6, pgp(eve), "untrusted key")
	accepted(7, pgp(bob))
	refused(8, sshSigned(mallory), "untrusted key")
	st := statusOf(t, s)
	if h := st.LastError.Headline(time.Now()); !strings.Contains(h, "is refused: its signature does not verify") {
		t.Errorf("headline %q", h)
	}
	// Checked again on every pass, the refused commit is not recorded again.
	for range 3 {
		if err := (&Client{Addr: s.HTTPAddr(), Token: testToken}).Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if again := statusOf(t, s); again.LastError == nil || !again.LastError.Time.Equal(st.LastError.Time) {
		t.Errorf("the refused commit was recorded again: %+v", again.LastError)
	}
	// Restarted with mallory's key trusted too, the server serves the commit it refused.
	s.Close(context.Background())
	os.WriteFile(signers, []byte(alice.AllowedSigner("")+mallory.AllowedSigner("")), 0o644)
	if cfg.VerifyCommits, err = commitsig.Load(signers, ring); err != nil {
		t.Fatal(err)
	}
	s = startServer(t, cfg)
	v8 := versionOf(t, meshFiles(8))
	waitFor(t, 10*time.Second, "the commit refused before to be served", func() bool {
		st := statusOf(t, s)
		return st.Version == v8 && st.LastError == nil
	})
}

func TestFailureHeadline(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sha := "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		f    Failure
		want string
	}{
		{Failure{Commit: sha}, "commit 0123456789ab does not compile"},
		{Failure{Commit: sha, Step: StepCompile}, "commit 0123456789ab does not compile"},
		{Failure{Commit: sha, Step: StepRead}, "commit 0123456789ab does not compile"},
		{Failure{Commit: sha, Step: StepVerify}, "commit 0123456789ab is refused: its signature does not verify"},
		{Failure{Commit: sha, Step: StepCheck}, "commit 0123456789ab is held"},
		{Failure{Commit: sha, Step: StepCompile, RetryAt: now.Add(2 * time.Second), Backoff: "2s", Attempts: 2},
			"commit 0123456789ab: the compiler failed; retrying in 2s (2 attempts so far)"},
		{Failure{Step: StepResolve, RetryAt: now.Add(8 * time.Second), Backoff: "8s", Attempts: 1}, "the ref cannot be resolved; retrying in 8s"},
		{Failure{Step: StepFetch, RetryAt: now.Add(-time.Minute), Backoff: "30s", Attempts: 9},
			"the repository cannot be read; retrying every 30s (9 attempts and more)"},
	} {
		if got := tc.f.Headline(now); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.f, got, tc.want)
		}
	}
}
