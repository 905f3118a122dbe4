package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// Lifetimes of generated authorities.
const (
	// RootTTL is the life of a generated root: long, since rotation is explicit.
	RootTTL = 10 * 365 * 24 * time.Hour
	// backdate moves NotBefore into the past, for clocks a little behind ours.
	backdate = time.Minute
)

// signer is an Authority parsed for signing.
type signer struct {
	id    string
	cert  *x509.Certificate // signs leaves
	key   crypto.Signer
	chain []byte // PEM of what follows a leaf in cert.pem: ChainPEM, then CrossSignedPEM
}

func parseSigner(a *Authority) (*signer, error) {
	if a == nil || a.KeyPEM == "" {
		return nil, ErrNotInitialized
	}
	key, err := parseKey([]byte(a.KeyPEM))
	if err != nil {
		return nil, err
	}
	signing := a.RootPEM
	if a.ChainPEM != "" {
		signing = a.ChainPEM
	}
	certs, err := parseCerts([]byte(signing))
	if err != nil {
		return nil, err
	}
	if !publicKeyEqual(certs[0].PublicKey, key.Public()) {
		return nil, errors.New("ca: the signing key does not match the signing certificate")
	}
	s := &signer{id: a.ID, cert: certs[0], key: key}
	s.chain = append(s.chain, a.ChainPEM...)
	s.chain = append(s.chain, a.CrossSignedPEM...)
	return s, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

func parseKey(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("ca: no private key in PEM")
		}
		var k any
		var err error
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			// Never wrap the parser's error with the input: it is a private key.
			return nil, errors.New("ca: malformed private key")
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("ca: unsupported private key type")
		}
		return s, nil
	}
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca: certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("ca: no certificate in PEM")
	}
	return out, nil
}

func certPEM(der []byte) []byte { return pemBlock("CERTIFICATE", der) }

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// keyPEM encodes a private key as PKCS#8 PEM.
func keyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func keyID(pub crypto.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n.Add(n, big.NewInt(1))
}

// newRoot makes a self-signed P-256 root for trustDomain.
func newRoot(trustDomain string, now time.Time) (*Authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id := keyID(key.Public())
	td := &url.URL{Scheme: "spiffe", Host: trustDomain}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"mesh"}, CommonName: "mesh root " + id},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(RootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	return &Authority{ID: id, RootPEM: string(certPEM(der)), KeyPEM: string(kp), Created: now.UTC()}, nil
}

// crossSign certifies next's signing certificate (subject and key unchanged) under prev, for at
// most prev's own lifetime.
func crossSign(prev *signer, next *Authority, now time.Time) (string, error) {
	nextSigner, err := parseSigner(next)
	if err != nil {
		return "", err
	}
	c := nextSigner.cert
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               c.Subject,
		SubjectKeyId:          c.SubjectKeyId,
		NotBefore:             now.Add(-backdate),
		NotAfter:              minTime(c.NotAfter, prev.cert.NotAfter),
		KeyUsage:              c.KeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  c.URIs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, prev.cert, c.PublicKey, prev.key)
	if err != nil {
		return "", fmt.Errorf("ca: cross-sign: %w", err)
	}
	return string(certPEM(der)), nil
}

// FromPEM builds an Authority from operator-supplied files: certFile is the signing certificate,
// optionally followed by intermediates; keyFile its private key; rootFile the trust anchor, which may
// be empty when the signing certificate is itself a self-signed root. The signing certificate must
// be a CA whose key matches.
func FromPEM(certFile, keyFile, rootFile []byte, now time.Time) (*Authority, error) {
	key, err := parseKey(keyFile)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(certFile)
	if err != nil {
		return nil, err
	}
	sc := certs[0]
	if !sc.IsCA || sc.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("ca: the signing certificate is not a CA that may sign certificates")
	}
	if !publicKeyEqual(sc.PublicKey, key.Public()) {
		return nil, errors.New("ca: the key does not match the signing certificate")
	}
	if now.After(sc.NotAfter) {
		return nil, errors.New("ca: the signing certificate has expired")
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	a := &Authority{ID: keyID(key.Public()), KeyPEM: string(kp), Created: now.UTC()}
	if len(rootFile) == 0 {
		if err := sc.CheckSignatureFrom(sc); err != nil || len(certs) > 1 {
			return nil, errors.New("ca: no root given and the signing certificate is not a self-signed root")
		}
		a.RootPEM = string(pemOf(certs))
		return a, nil
	}
	roots, err := parseCerts(rootFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := sc.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("ca: the signing certificate does not chain to the root: %w", err)
	}
	a.RootPEM = string(pemOf(roots))
	if len(certs) > 1 || !sc.Equal(roots[0]) {
		a.ChainPEM = string(pemOf(certs))
	}
	return a, nil
}

func pemOf(certs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, certPEM(c.Raw)...)
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
