package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"regexp"
	"time"
)

// maxCSR bounds a CSR's PEM: a generous P-384 or RSA-4096 request is under 4 KiB.
const maxCSR = 16 << 10

var labelRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidName reports whether s is a DNS label, the form of service and datacenter names.
func ValidName(s string) bool { return labelRe.MatchString(s) }

// CheckCSR parses a PEM certificate request and checks it may become the leaf of id: a valid
// self-signature, an accepted key (ECDSA P-256 or P-384, RSA of 2048 to 8192 bits), no DNS, IP or
// e-mail SANs, and no URI SAN other than id itself. The leaf's SAN is set by the CA from the
// authorized service, never copied from the request: a request may leave it out, and anything else
// it asks for is refused rather than ignored, so that a confused or malicious client learns at once.
func CheckCSR(csrPEM []byte, id string) (*x509.CertificateRequest, error) {
	if len(csrPEM) > maxCSR {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadCSR, maxCSR)
	}
	blk, _ := pem.Decode(csrPEM)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: no CERTIFICATE REQUEST PEM block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: ECDSA curve %s, want P-256 or P-384", ErrBadCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return nil, fmt.Errorf("%w: RSA key of %d bits, want 2048 to 8192", ErrBadCSR, n)
		}
	default:
		return nil, fmt.Errorf("%w: key type %T, want ECDSA or RSA", ErrBadCSR, csr.PublicKey)
	}
	if len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, fmt.Errorf("%w: only the SPIFFE ID may be a SAN (request names %v %v %v)", ErrBadCSR, csr.DNSNames, csr.IPAddresses, csr.EmailAddresses)
	}
	for _, u := range csr.URIs {
		if u.String() != id {
			return nil, fmt.Errorf("%w: URI SAN %q, this token may only obtain %q", ErrBadCSR, u.String(), id)
		}
	}
	if len(csr.URIs) > 1 {
		return nil, fmt.Errorf("%w: %d URI SANs, want at most one", ErrBadCSR, len(csr.URIs))
	}
	return csr, nil
}

// issue signs a leaf for id with the CSR's public key, valid for ttl but never beyond the signer.
func issue(s *signer, csr *x509.CertificateRequest, id *url.URL, ttl time.Duration, now time.Time) ([]byte, *x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		// An empty subject makes the SAN extension critical, as the X.509-SVID spec asks.
		NotBefore:             now.Add(-backdate),
		NotAfter:              minTime(now.Add(ttl), s.cert.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.cert, csr.PublicKey, s.key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: sign: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return der, leaf, nil
}
