package tlsutil

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeCA(t *testing.T, dir string) (cert, key []byte, caFile string) {
	t.Helper()
	cert, key, err := NewCA(10, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(dir, "ca.pem")
	if err := WriteFiles(caFile, cert, filepath.Join(dir, "ca-key.pem"), key); err != nil {
		t.Fatal(err)
	}
	return cert, key, caFile
}

func writeCert(t *testing.T, dir string, caCert, caKey []byte, req CertRequest) (string, string) {
	t.Helper()
	cert, key, err := NewCert(caCert, caKey, req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, k := filepath.Join(dir, req.Name+".pem"), filepath.Join(dir, req.Name+"-key.pem")
	if err := WriteFiles(c, cert, k, key); err != nil {
		t.Fatal(err)
	}
	return c, k
}

// Server and client certificates differ where Raft looks; Load takes only a server certificate
// of the CA; keys are 0600 and never overwritten.
func TestCertificates(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey, caFile := writeCA(t, dir)
	sc, sk := writeCert(t, dir, caCert, caKey, CertRequest{Server: true, Name: "s1", Days: 1})
	cc, ck := writeCert(t, dir, caCert, caKey, CertRequest{Name: "ops", Days: 1})
	parse := func(f string) *x509.Certificate {
		b, _ := os.ReadFile(f)
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if !IsServer(parse(sc)) || IsServer(parse(cc)) {
		t.Errorf("IsServer: server %v, client %v", IsServer(parse(sc)), IsServer(parse(cc)))
	}
	for _, f := range []string{sk, ck, filepath.Join(dir, "ca-key.pem")} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode())
		}
	}
	if err := WriteFiles(sc, []byte("x"), sk, []byte("y")); !errors.Is(err, ErrExists) {
		t.Errorf("overwrite: %v", err)
	}
	if m, err := Load(sc, sk, caFile); err != nil || m == nil {
		t.Errorf("Load(server): %v", err)
	}
	if _, err := Load(cc, ck, caFile); !errors.Is(err, ErrNotServer) {
		t.Errorf("Load(client): %v, want %v", err, ErrNotServer)
	}
	other := t.TempDir()
	_, _, otherCA := writeCA(t, other)
	if _, err := Load(sc, sk, otherCA); err == nil {
		t.Errorf("Load with another CA succeeded")
	}
	if _, err := Load(sc, "", caFile); !errors.Is(err, ErrIncomplete) {
		t.Errorf("Load without a key: %v", err)
	}
	if m, err := Load("", "", ""); m != nil || err != nil {
		t.Errorf("Load of nothing: %v %v", m, err)
	}
	if _, _, err := NewCert(caCert, caKey, CertRequest{Name: "x", Days: 1, DNSNames: []string{ServerName}}, time.Now()); err == nil {
		t.Errorf("a client certificate naming %s was made", ServerName)
	}
}
