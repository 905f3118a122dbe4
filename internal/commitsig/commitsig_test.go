package commitsig_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/meshgit/mesh/internal/commitsig"
	"github.com/meshgit/mesh/internal/commitsig/sigtest"
)

type repo struct {
	t   *testing.T
	dir string
}

func (r *repo) git(args ...string) (string, error) {
	base := []string{"-c", "user.name=mesh test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false", "-C", r.dir}
	cmd := exec.Command("git", append(base, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (r *repo) must(args ...string) string {
	r.t.Helper()
	out, err := r.git(args...)
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// commit commits a new file, with extra git options (a signing key) and commit flags.
func (r *repo) commit(name string, gitArgs []string, flags ...string) string {
	r.t.Helper()
	if err := os.WriteFile(filepath.Join(r.dir, name), []byte(name), 0o644); err != nil {
		r.t.Fatal(err)
	}
	r.must("add", "-A")
	r.must(append(append(gitArgs, "commit", "-q", "-m", name), flags...)...)
	return r.must("rev-parse", "HEAD")
}

func (r *repo) object(sha string) *object.Commit {
	r.t.Helper()
	g, err := git.PlainOpen(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	c, err := g.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// tamper stores a copy of commit sha with another message and the same signature.
func (r *repo) tamper(sha string) string {
	r.t.Helper()
	g, _ := git.PlainOpen(r.dir)
	c := r.object(sha)
	c.Message = "tampered\n"
	o := g.Storer.NewEncodedObject()
	if err := c.Encode(o); err != nil {
		r.t.Fatal(err)
	}
	h, err := g.Storer.SetEncodedObject(o)
	if err != nil {
		r.t.Fatal(err)
	}
	return h.String()
}

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every SSH case is decided as `git verify-commit` decides it with gpg.ssh.allowedSignersFile,
// and every case (SSH and OpenPGP) gets the error kind it should.
func TestVerify(t *testing.T) {
	sigtest.NeedSSHKeygen(t)
	dir := t.TempDir()
	keys := t.TempDir()
	r := &repo{t: t, dir: dir}
	r.must("init", "-q", "-b", "main")

	alice := sigtest.NewSSHKey(t, keys, "alice@example.com")
	mallory := sigtest.NewSSHKey(t, keys, "mallory@example.com")
	bob := sigtest.NewPGPKey(t, "Bob", "bob@example.com")
	eve := sigtest.NewPGPKey(t, "Eve", "eve@example.com")

	signers := writeFile(t, keys, "allowed_signers", "# trusted\n\n"+alice.AllowedSigner(`namespaces="git"`))
	fileOnly := writeFile(t, keys, "file_only", alice.AllowedSigner(`namespaces="file,!git"`))
	expired := writeFile(t, keys, "expired", alice.AllowedSigner(`valid-before="20000101Z"`))
	notYet := writeFile(t, keys, "not_yet", alice.AllowedSigner(`valid-after="29990101"`))
	ring := writeFile(t, keys, "bob.asc", bob.ArmoredPublic(t))

	unsigned := r.commit("unsigned", nil)
	sshGood := r.commit("ssh-good", alice.GitArgs(), "-S")
	sshUnknown := r.commit("ssh-unknown", mallory.GitArgs(), "-S")
	sshTampered := r.tamper(sshGood)
	r.must("add", "-A")
	pgpGood := sigtest.CommitPGP(t, dir, bob, "pgp-good")
	pgpUnknown := sigtest.CommitPGP(t, dir, eve, "pgp-unknown")
	pgpTampered := r.tamper(pgpGood)

	cases := []struct {
		name   string
		files  []string
		commit string
		want   error  // nil: verified
		msg    string // in the error, or in the signer
		git    bool   // compare with git verify-commit (SSH with an allowed_signers file)
	}{
		{"unsigned", []string{signers}, unsigned, commitsig.ErrUnsigned, "not signed", true},
		{"ssh good", []string{signers}, sshGood, nil, "alice@example.com", true},
		{"ssh unknown key", []string{signers}, sshUnknown, commitsig.ErrUnknownKey, "is not in " + signers, true},
		{"ssh tampered", []string{signers}, sshTampered, commitsig.ErrBadSignature, "alice@example.com", true},
		{"ssh namespace not allowed", []string{fileOnly}, sshGood, commitsig.ErrUnknownKey, `namespaces="file,!git" does not admit "git"`, true},
		{"ssh key expired", []string{expired}, sshGood, commitsig.ErrUnknownKey, "valid-before 2000-01-01", true},
		{"ssh key not yet valid", []string{notYet}, sshGood, commitsig.ErrUnknownKey, "valid-after 2999-01-01", true},
		{"ssh with only a keyring", []string{ring}, sshGood, commitsig.ErrUnknownKey, "no allowed_signers file", false},
		{"openpgp good", []string{ring}, pgpGood, nil, "Bob <bob@example.com>", false},
		{"openpgp unknown key", []string{ring}, pgpUnknown, commitsig.ErrUnknownKey, "openpgp key " + eve.Entity.PrimaryKey.KeyIdString() + " is not in " + ring, false},
		{"openpgp tampered", []string{ring}, pgpTampered, commitsig.ErrBadSignature, "openpgp", false},
		{"openpgp with only allowed_signers", []string{signers}, pgpGood, commitsig.ErrUnknownKey, "no OpenPGP keyring", false},
		{"both files, ssh", []string{signers, ring}, sshGood, nil, "alice", false},
		{"both files, openpgp", []string{signers, ring}, pgpGood, nil, "Bob", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, err := commitsig.Load(tc.files...)
			if err != nil {
				t.Fatal(err)
			}
			s, err := k.Verify(r.object(tc.commit))
			t.Logf("signer %v, error %v", s, err)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("Verify: %v, want verified", err)
			case tc.want == nil && !strings.Contains(s.String(), tc.msg):
				t.Errorf("signer %s, want it to name %q", s, tc.msg)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("Verify = %v, %v; want %v", s, err, tc.want)
			case tc.want != nil && !strings.Contains(err.Error(), tc.msg):
				t.Errorf("error %q lacks %q", err, tc.msg)
			}
			if !tc.git {
				return
			}
			out, gerr := r.git("-c", "gpg.ssh.allowedSignersFile="+tc.files[0], "verify-commit", tc.commit)
			if (gerr == nil) != (tc.want == nil) {
				t.Errorf("git verify-commit says %v (%s), we say %v", gerr, out, err)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	alice := sigtest.NewSSHKey(t, dir, "alice@example.com")
	for name, data := range map[string]string{
		"empty":          "# nothing\n",
		"garbage":        "alice@example.com not-a-key\n",
		"cert-authority": alice.AllowedSigner("cert-authority"),
		"bad option":     alice.AllowedSigner(`no-touch-required`),
		"bad time":       alice.AllowedSigner(`valid-after="yesterday"`),
		"bad armor":      "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnope\n-----END PGP PUBLIC KEY BLOCK-----\n",
	} {
		f := writeFile(t, dir, strings.ReplaceAll(name, " ", "_"), data)
		if _, err := commitsig.Load(f); !errors.Is(err, commitsig.ErrKeys) || !strings.Contains(err.Error(), f) {
			t.Errorf("%s: Load = %v, want an ErrKeys naming the file", name, err)
		}
	}
	if _, err := commitsig.Load(filepath.Join(dir, "missing")); !errors.Is(err, commitsig.ErrKeys) {
		t.Errorf("missing file: %v", err)
	}
}
