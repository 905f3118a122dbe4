package ca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"testing"
)

// FuzzCheckCSR: no input panics, and whatever CheckCSR accepts asks for no name but the
// authorized identity and carries a valid self-signature.
func FuzzCheckCSR(f *testing.F) {
	key := p256(f)
	f.Add(csrFor(f, key, nil))
	f.Add(csrFor(f, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(apiID)}}))
	f.Add(csrFor(f, key, &x509.CertificateRequest{DNSNames: []string{"a"}, IPAddresses: []net.IP{net.IPv4(1, 2, 3, 4)}}))
	f.Add(csrFor(f, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, URIs: []*url.URL{mustURL("spiffe://shop.mesh/ns/default/dc/dc1/svc/db")}}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMA==\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		csr, err := CheckCSR(in, apiID)
		if err != nil {
			return
		}
		if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 || len(csr.URIs) > 1 ||
			(len(csr.URIs) == 1 && csr.URIs[0].String() != apiID) {
			t.Fatalf("accepted a CSR asking for %v %v %v %v", csr.URIs, csr.DNSNames, csr.IPAddresses, csr.EmailAddresses)
		}
		if csr.CheckSignature() != nil {
			t.Fatal("accepted a CSR whose signature does not verify")
		}
		if blk, _ := pem.Decode(in); blk == nil {
			t.Fatal("accepted input without PEM")
		}
	})
}
