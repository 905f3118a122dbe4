package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// VerifyPeer checks a TLS peer's certificate chain (raw DER, the leaf first, as
// tls.Config.VerifyPeerCertificate receives it) against roots and returns the peer's SPIFFE ID: the
// leaf's one URI SAN. usage is x509.ExtKeyUsageClientAuth on a server, ServerAuth on a client.
// It is what a proxyless service that reads its files itself (rather than through gRPC's xDS
// credentials) uses to learn who called.
func VerifyPeer(raw [][]byte, roots *x509.CertPool, usage x509.ExtKeyUsage, now time.Time) (string, error) {
	if len(raw) == 0 {
		return "", errors.New("ca: peer sent no certificate")
	}
	if roots == nil {
		return "", errors.New("ca: no trust bundle")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return "", fmt.Errorf("ca: peer certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return "", fmt.Errorf("ca: peer certificate: %w", err)
	}
	if len(certs[0].URIs) != 1 || certs[0].URIs[0].Scheme != "spiffe" {
		return "", errors.New("ca: peer certificate has no single SPIFFE ID")
	}
	return certs[0].URIs[0].String(), nil
}
