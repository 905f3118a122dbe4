// Package commitsig verifies the signature of a Git commit against the keys an operator trusts:
// an SSH allowed_signers file (the format of ssh-keygen(1) "ALLOWED SIGNERS", read as
// `git verify-commit` reads gpg.ssh.allowedSignersFile) and armored OpenPGP keyrings.
//
// What it guarantees:
//   - Verify accepts a commit only when it carries exactly one signature, made over the commit
//     without its signature header, that verifies with a trusted key. Anything else is an error
//     matching ErrUnsigned, ErrBadSignature or ErrUnknownKey (errors.Is), whose message names
//     the key when there is one.
//   - SSH, as git and ssh-keygen decide it: the signature's namespace is "git"; its key is listed
//     in allowed_signers; that line's namespaces= (if any) admits "git"; its valid-after and
//     valid-before (if any) hold at the commit's committer time, which git passes as
//     -Overify-time. Principals name the signer in messages; as with git, any principal's key
//     is accepted. cert-authority lines are refused when the file is loaded (not supported).
//   - OpenPGP: go-git's Commit.Verify (ProtonMail go-crypto) with each keyring in turn.
package commitsig

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrUnsigned means the commit carries no signature.
	ErrUnsigned = errors.New("commit is not signed")
	// ErrBadSignature means the signature is malformed, of an unsupported kind, or does not
	// verify with the key it names.
	ErrBadSignature = errors.New("bad commit signature")
	// ErrUnknownKey means the signing key is not trusted (not listed, or not for this use or time).
	ErrUnknownKey = errors.New("commit signed by an untrusted key")
	// ErrKeys means a keys file could not be read or parsed.
	ErrKeys = errors.New("commit signing keys")
)

// Namespace is the SSH signature namespace of Git commits and tags.
const Namespace = "git"

const (
	pgpKeyBegin = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
	pgpKeyEnd   = "-----END PGP PUBLIC KEY BLOCK-----"
	pgpSigBegin = "-----BEGIN PGP SIGNATURE-----"
	sshSigBegin = "-----BEGIN SSH SIGNATURE-----"
)

// Keys is the set of trusted keys read from one or more files.
type Keys struct {
	signers   []*allowedSigner
	keyrings  []string // armored OpenPGP public key blocks
	ringFiles []string // the files they came from
	files     []string
}

// Signer says who signed a verified commit.
type Signer struct {
	Format   string // "ssh" or "openpgp"
	Identity string // the allowed_signers principals, or the OpenPGP user ids
	Key      string // the key's SHA256 fingerprint (SSH) or key id (OpenPGP)
}

func (s Signer) String() string { return fmt.Sprintf("%s key %s (%s)", s.Format, s.Key, s.Identity) }

// Load reads each file, deciding by its content whether it is an armored OpenPGP keyring (it
// holds a "BEGIN PGP PUBLIC KEY BLOCK" armor) or an SSH allowed_signers file.
func Load(files ...string) (*Keys, error) {
	k := &Keys{files: files}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: no file given", ErrKeys)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKeys, err)
		}
		n := len(k.signers) + len(k.keyrings)
		if bytes.Contains(b, []byte(pgpKeyBegin)) {
			err = k.addKeyrings(f, string(b))
		} else {
			err = k.addAllowedSigners(f, b)
		}
		if err != nil {
			return nil, err
		}
		if len(k.signers)+len(k.keyrings) == n {
			return nil, fmt.Errorf("%w: %s: no keys (want an SSH allowed_signers file or an armored OpenPGP keyring)", ErrKeys, f)
		}
	}
	return k, nil
}

// String names the files the keys came from.
func (k *Keys) String() string { return strings.Join(k.files, ",") }

func (k *Keys) addKeyrings(file, text string) error {
	for {
		i := strings.Index(text, pgpKeyBegin)
		if i < 0 {
			return nil
		}
		j := strings.Index(text[i:], pgpKeyEnd)
		if j < 0 {
			return fmt.Errorf("%w: %s: unterminated %s", ErrKeys, file, pgpKeyBegin)
		}
		block := text[i : i+j+len(pgpKeyEnd)]
		if _, err := readArmoredKeyRing(block); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrKeys, file, err)
		}
		k.keyrings = append(k.keyrings, block+"\n")
		if len(k.ringFiles) == 0 || k.ringFiles[len(k.ringFiles)-1] != file {
			k.ringFiles = append(k.ringFiles, file)
		}
		text = text[i+j+len(pgpKeyEnd):]
	}
}

// Verify checks the signature of commit c (see the package comment) and says who signed it.
func (k *Keys) Verify(c *object.Commit) (*Signer, error) {
	sig := strings.TrimSpace(c.PGPSignature)
	switch {
	case sig == "":
		return nil, ErrUnsigned
	case strings.Count(sig, "-----BEGIN ") > 1:
		return nil, fmt.Errorf("%w: more than one signature", ErrBadSignature)
	case strings.HasPrefix(sig, sshSigBegin):
		return k.verifySSH(c, sig)
	case strings.HasPrefix(sig, pgpSigBegin):
		return k.verifyPGP(c)
	}
	first, _, _ := strings.Cut(sig, "\n")
	return nil, fmt.Errorf("%w: unsupported signature kind %q", ErrBadSignature, first)
}

// payload is what a commit's signature signs: the commit without its signature header.
func payload(c *object.Commit) ([]byte, error) {
	o := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(o); err != nil {
		return nil, err
	}
	r, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(r)
	return b.Bytes(), err
}

func (k *Keys) verifySSH(c *object.Commit, armored string) (*Signer, error) {
	sig, err := sshsig.Unarmor([]byte(armored))
	if err != nil {
		return nil, fmt.Errorf("%w: ssh: %v", ErrBadSignature, err)
	}
	fp := ssh.FingerprintSHA256(sig.PublicKey)
	if _, ok := sig.PublicKey.(*ssh.Certificate); ok {
		return nil, fmt.Errorf("%w: ssh certificate %s: cert-authority keys are not supported", ErrUnknownKey, fp)
	}
	if sig.Namespace != Namespace {
		return nil, fmt.Errorf("%w: ssh key %s signed for namespace %q, not %q", ErrBadSignature, fp, sig.Namespace, Namespace)
	}
	data, err := payload(c)
	if err != nil {
		return nil, err
	}
	when := c.Committer.When
	var refused []string
	for _, a := range k.signers {
		if !bytes.Equal(a.key.Marshal(), sig.PublicKey.Marshal()) {
			continue
		}
		if why := a.refuses(Namespace, when); why != "" {
			refused = append(refused, fmt.Sprintf("%s:%d: %s", a.file, a.line, why))
			continue
		}
		if err := sshsig.Verify(bytes.NewReader(data), sig, a.key, sig.HashAlgorithm, Namespace); err != nil {
			return nil, fmt.Errorf("%w: ssh key %s (%s): %v", ErrBadSignature, fp, a.principals, err)
		}
		return &Signer{Format: "ssh", Identity: a.principals, Key: fp}, nil
	}
	if len(refused) > 0 {
		return nil, fmt.Errorf("%w: ssh key %s is listed but not valid here: %s", ErrUnknownKey, fp, strings.Join(refused, "; "))
	}
	return nil, fmt.Errorf("%w: ssh key %s is not in %s", ErrUnknownKey, fp, k.sshFiles())
}

func (k *Keys) sshFiles() string {
	if len(k.signers) == 0 {
		return "the trusted keys (no allowed_signers file given)"
	}
	var files []string
	for _, a := range k.signers {
		if len(files) == 0 || files[len(files)-1] != a.file {
			files = append(files, a.file)
		}
	}
	return strings.Join(files, ", ")
}

func (k *Keys) verifyPGP(c *object.Commit) (*Signer, error) {
	if len(k.keyrings) == 0 {
		return nil, fmt.Errorf("%w: openpgp signature, and no OpenPGP keyring given", ErrUnknownKey)
	}
	var lastErr error
	for _, ring := range k.keyrings {
		e, err := c.Verify(ring)
		if err == nil {
			var ids []string
			for name := range e.Identities {
				ids = append(ids, name)
			}
			return &Signer{Format: "openpgp", Identity: strings.Join(ids, ", "), Key: e.PrimaryKey.KeyIdString()}, nil
		}
		if !errors.Is(err, pgperrors.ErrUnknownIssuer) {
			return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
		lastErr = err
	}
	id, err := signatureKeyID(c.PGPSignature)
	if err != nil || id == "" {
		return nil, fmt.Errorf("%w: %v", ErrUnknownKey, lastErr)
	}
	return nil, fmt.Errorf("%w: openpgp key %s is not in %s", ErrUnknownKey, id, strings.Join(k.ringFiles, ", "))
}

// parseTime parses an allowed_signers timestamp: YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, in
// the local time zone unless it ends in Z (UTC), as ssh-keygen does.
func parseTime(s string) (time.Time, error) {
	loc := time.Local
	if t, ok := strings.CutSuffix(s, "Z"); ok {
		s, loc = t, time.UTC
	}
	layout := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}[len(s)]
	if layout == "" {
		return time.Time{}, fmt.Errorf("timestamp %q: want YYYYMMDD[HHMM[SS]][Z]", s)
	}
	return time.ParseInLocation(layout, s, loc)
}
