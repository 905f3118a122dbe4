// Package sigtest makes signing keys and signed commits for tests: SSH ed25519 keys that the git
// CLI signs with (gpg.format=ssh, through ssh-keygen), and OpenPGP keys that go-git signs with.
// Keys are made fresh in each test; none is ever checked in.
package sigtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	"golang.org/x/crypto/ssh"
)

// SSHKey is an ed25519 key in OpenSSH format on disk.
type SSHKey struct {
	File      string // the private key, mode 0600 (user.signingkey)
	Principal string
	Public    ssh.PublicKey
}

// NewSSHKey writes a new ed25519 private key into dir.
func NewSSHKey(t testing.TB, dir, principal string) *SSHKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, principal)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, strings.NewReplacer("@", "_", ".", "_").Replace(principal)+"_ed25519")
	if err := os.WriteFile(file, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return &SSHKey{File: file, Principal: principal, Public: sp}
}

// AllowedSigner is the key's allowed_signers line, with options (such as namespaces="git")
// when given.
func (k *SSHKey) AllowedSigner(options string) string {
	line := k.Principal + " "
	if options != "" {
		line += options + " "
	}
	return line + string(ssh.MarshalAuthorizedKey(k.Public))
}

// GitArgs are the git options that sign a commit with the key (pass -S to commit).
func (k *SSHKey) GitArgs() []string {
	return []string{"-c", "gpg.format=ssh", "-c", "user.signingkey=" + k.File}
}

// PGPKey is an OpenPGP key pair.
type PGPKey struct {
	Entity *openpgp.Entity
}

// NewPGPKey makes an EdDSA OpenPGP key for name <email>.
func NewPGPKey(t testing.TB, name, email string) *PGPKey {
	t.Helper()
	e, err := openpgp.NewEntity(name, "", email, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return &PGPKey{Entity: e}
}

// ArmoredPublic is the key's public part as an armored keyring.
func (k *PGPKey) ArmoredPublic(t testing.TB) string {
	t.Helper()
	var b bytes.Buffer
	w, err := armor.Encode(&b, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Entity.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return b.String() + "\n"
}

// CommitPGP commits the index of the work tree at dir (staged with the git CLI) with go-git,
// signed by key, and returns the commit's SHA.
func CommitPGP(t testing.TB, dir string, key *PGPKey, msg string) string {
	t.Helper()
	r, err := git.PlainOpen(dir)
	if err != nil {
		t.Fatal(err)
	}
	wt, err := r.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	who := &object.Signature{Name: "mesh test", Email: "test@example.invalid", When: time.Now()}
	h, err := wt.Commit(msg, &git.CommitOptions{SignKey: key.Entity, Author: who, Committer: who, AllowEmptyCommits: true})
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// NeedSSHKeygen fails the test when ssh-keygen, which git signs SSH commits with, is missing
// (.ci/run installs openssh-client).
func NeedSSHKeygen(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Fatal("ssh-keygen is needed to sign commits with SSH keys (apt-get install openssh-client)")
	}
}
