package reconciler

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// secureDataDir makes the data directory owner-only: it creates it 0700, or narrows an existing
// one, and takes the group and other bits off everything in it (Raft's snapshots hold the CA's
// key). Symbolic links are left alone.
func secureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// The server's own background writers may create and rename temporary files meanwhile
	// (atomicfile): an entry gone between listing and looking at it is not an error.
	gone := func(path string, err error) bool { return path != dir && errors.Is(err, fs.ErrNotExist) }
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if gone(path, err) {
				return nil
			}
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if gone(path, err) {
				return nil
			}
			return err
		}
		want := info.Mode().Perm() & 0o700
		if d.IsDir() {
			want = 0o700
		}
		if info.Mode().Perm() == want {
			return nil
		}
		if err := os.Chmod(path, want); err != nil && !gone(path, err) {
			return err
		}
		return nil
	})
}

// isTLSVerifyError reports whether err is a failure to verify a server's certificate, which
// retrying does not cure.
func isTLSVerifyError(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}
