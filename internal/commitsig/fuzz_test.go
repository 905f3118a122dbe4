package commitsig_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"

	"github.com/meshgit/mesh/internal/commitsig"
	"github.com/meshgit/mesh/internal/commitsig/sigtest"
)

// Whatever a pusher puts in a commit's signature header, Verify neither panics nor accepts it:
// the commit below was never signed by the trusted keys.
func FuzzVerifySignature(f *testing.F) {
	dir := f.TempDir()
	alice := sigtest.NewSSHKey(f, dir, "alice@example.com")
	bob := sigtest.NewPGPKey(f, "Bob", "bob@example.com")
	signers := filepath.Join(dir, "allowed_signers")
	ring := filepath.Join(dir, "bob.asc")
	os.WriteFile(signers, []byte(alice.AllowedSigner("")), 0o644)
	os.WriteFile(ring, []byte(bob.ArmoredPublic(f)), 0o644)
	keys, err := commitsig.Load(signers, ring)
	if err != nil {
		f.Fatal(err)
	}
	// A well-formed SSH signature by a key of the same kind, over other data.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	sig, err := sshsig.Sign(strings.NewReader("other data"), signer, sshsig.HashSHA512, "git")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(sshsig.Armor(sig)))
	f.Add("-----BEGIN PGP SIGNATURE-----\n\nwsBcBAABCAAQBQJ\n-----END PGP SIGNATURE-----\n")
	f.Add("-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----\n")
	f.Add("-----BEGIN SIGNED MESSAGE-----\n")
	f.Add("")
	who := object.Signature{Name: "dev", Email: "dev@example.com", When: time.Unix(1700000000, 0)}
	f.Fuzz(func(t *testing.T, signature string) {
		c := &object.Commit{Author: who, Committer: who, Message: "m\n", PGPSignature: signature}
		if s, err := keys.Verify(c); err == nil {
			t.Fatalf("verified an unsigned commit as %v with signature %q", s, signature)
		}
	})
}
