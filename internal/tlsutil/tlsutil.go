// Package tlsutil makes and loads the TLS material of the mesh servers' own channels, Raft and
// the HTTP API (like `consul tls`): a CA, server certificates and client certificates.
//
// What it guarantees:
//   - A server certificate carries the DNS name ServerName and both the server and client
//     authentication key usages; a client certificate carries neither ServerName nor the server
//     usage. IsServer tells them apart, so a client certificate of the cluster's CA never passes
//     for a server.
//   - The Raft configurations (PeerServerConfig, PeerClientConfig) accept only a peer presenting a
//     server certificate that chains to the cluster's CA, on both ends of a connection, over
//     TLS 1.2 or later.
//   - Private keys are written owner-only (0600) and never overwritten.
package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"slices"
	"time"
)

// ServerName is the DNS name every server certificate carries and every Raft peer checks (as
// Consul's server.<dc>.consul): it marks a certificate as a mesh server's.
const ServerName = "server.mesh"

// Sentinel errors, matched with errors.Is.
var (
	// ErrNotServer means a peer presented a certificate of the CA that is not a server certificate.
	ErrNotServer = errors.New("not a mesh server certificate")
	// ErrIncomplete means only some of the certificate, key and CA files were given.
	ErrIncomplete = errors.New("--tls-cert-file, --tls-key-file and --tls-ca-file go together")
	// ErrExists means a file to be written exists already (keys are never overwritten).
	ErrExists = errors.New("file exists")
)

// IsServer reports whether cert is a server certificate: it is valid for server authentication
// and names ServerName.
func IsServer(cert *x509.Certificate) bool {
	return slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && slices.Contains(cert.DNSNames, ServerName)
}

// CertRequest describes a certificate for NewCert.
type CertRequest struct {
	Server   bool   // a server certificate (else a client certificate)
	Name     string // the node id of a server, or the client's name
	Days     int    // validity
	IPs      []net.IP
	DNSNames []string
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA makes a self-signed CA (EC P-256) valid for days, and returns its certificate and key as PEM.
func NewCA(days int, now time.Time) (certPEM, keyPEM []byte, err error) {
	if days <= 0 {
		return nil, nil, fmt.Errorf("days must be positive, not %d", days)
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	sn, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "mesh servers CA " + sn.Text(16)[:8], Organization: []string{"mesh"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.AddDate(0, 0, days),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// NewCert makes a certificate signed by the CA (caCertPEM, caKeyPEM) and returns it and its key as
// PEM. A server certificate names ServerName, localhost and 127.0.0.1 besides req's addresses.
func NewCert(caCertPEM, caKeyPEM []byte, req CertRequest, now time.Time) (certPEM, keyPEM []byte, err error) {
	if req.Days <= 0 {
		return nil, nil, fmt.Errorf("days must be positive, not %d", req.Days)
	}
	if req.Name == "" {
		return nil, nil, errors.New("a certificate needs a name")
	}
	caCert, err := parseCert(caCertPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	caKey, err := parseKey(caKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	sn, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.AddDate(0, 0, req.Days),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		IPAddresses:  req.IPs,
		DNSNames:     req.DNSNames,
	}
	if req.Server {
		tmpl.Subject = pkix.Name{CommonName: req.Name + "." + ServerName}
		// Servers dial each other with the same certificate: both usages.
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames = append([]string{ServerName, "localhost"}, req.DNSNames...)
		tmpl.IPAddresses = append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, req.IPs...)
	} else {
		if slices.Contains(req.DNSNames, ServerName) {
			return nil, nil, fmt.Errorf("a client certificate may not name %s", ServerName)
		}
		tmpl.Subject = pkix.Name{CommonName: req.Name + ".client.mesh"}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

func parseCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func parseKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, errors.New("unsupported key type")
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	return x509.ParsePKCS1PrivateKey(blk.Bytes)
}

// WriteFiles writes a certificate (0644) and its key (0600), refusing to overwrite either.
func WriteFiles(certFile string, certPEM []byte, keyFile string, keyPEM []byte) error {
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("%s: %w", f, ErrExists)
		}
	}
	if err := writeNew(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(certFile, certPEM, 0o644); err != nil {
		os.Remove(keyFile)
		return err
	}
	return nil
}

func writeNew(name string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		os.Remove(name)
	}
	return err
}
